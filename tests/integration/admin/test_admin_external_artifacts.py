"""Artifacts through the admin API when the store is an external S3 (moto's server on loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from tests.conftest import ACCOUNT_ID
from tests.support.services import moto_s3_server

from neurondock_platform.config import Settings

KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_s3_server() as url:
        yield url


@pytest.fixture
def settings(settings, moto_url) -> Settings:
    """The suite's settings, with the artifact store moved to the external S3."""
    return settings.with_overrides(
        s3_endpoint_url=moto_url,
        s3_access_key_id=KEYS["aws_access_key_id"],
        s3_secret_access_key=KEYS["aws_secret_access_key"],
    )


def test_an_account_uses_its_own_artifact_bucket_in_the_external_store(api, tenant, moto_url):
    bucket = f"nd-artifacts-{ACCOUNT_ID}"
    listed = api.ok("GET", "/artifacts")
    assert [b["name"] for b in listed["items"]] == [bucket] and listed["default_bucket"] == bucket

    body = b"model bytes " * 1000
    up = api.request(
        "PUT", f"/artifacts/{bucket}/object", query={"key": "models/m.tar.gz"}, data=body,
        headers={"Content-Type": "application/gzip"},
    )  # fmt: skip
    assert up.status_code == 201, up.get_data(as_text=True)
    assert up.get_json()["size"] == len(body) and up.get_json()["s3_uri"] == f"s3://{bucket}/models/m.tar.gz"
    # It really is in the external store, where the platform's workers will fetch it.
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", **KEYS)
    assert s3.get_object(Bucket=bucket, Key="models/m.tar.gz")["Body"].read() == body

    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"models/x{i}", Body=b"x")
    first = api.ok("GET", f"/artifacts/{bucket}", query={"prefix": "models/", "limit": "2"})
    rest = api.ok(
        "GET", f"/artifacts/{bucket}", query={"prefix": "models/", "limit": "2", "next_token": first["next_token"]}
    )
    keys = [o["key"] for o in first["items"] + rest["items"]]
    assert keys == ["models/m.tar.gz", "models/x0", "models/x1", "models/x2"] and rest["next_token"] is None

    down = api.get(f"/artifacts/{bucket}/object", query={"key": "models/m.tar.gz"})
    assert down.status_code == 200 and down.data == body and down.content_type == "application/gzip"
    assert api.get(f"/artifacts/{bucket}/object", query={"key": "nope"}).status_code == 404

    # The platform's keys reach every bucket of the store; an account reaches only its own.
    s3.create_bucket(Bucket="someone-elses")
    s3.put_object(Bucket="someone-elses", Key="secret", Body=b"s")
    assert api.get("/artifacts/someone-elses", query={"prefix": ""}).status_code == 404
    assert api.get("/artifacts/someone-elses/object", query={"key": "secret"}).status_code == 404
    refused = api.request("PUT", "/artifacts/someone-elses/object", query={"key": "k"}, data=b"y")
    assert refused.status_code == 404
    assert tenant.api.get(f"/artifacts/{bucket}/object", query={"key": "models/m.tar.gz"}).status_code == 404


def test_a_token_upload_streams_into_the_external_store(api, moto_url):
    bucket = f"nd-artifacts-{ACCOUNT_ID}"
    bearer = api.with_token(api.ok("POST", "/tokens", status=201)["token"])
    body = bytes(range(256)) * 4096  # 1 MiB, sent as a stream of unknown length to the store
    resp = bearer.request("PUT", f"/artifacts/{bucket}/object", query={"key": "big.bin"}, data=body)
    assert resp.status_code == 201 and resp.get_json()["size"] == len(body)
    assert bearer.ok("GET", f"/artifacts/{bucket}/object", query={"key": "big.bin"}).data == body
