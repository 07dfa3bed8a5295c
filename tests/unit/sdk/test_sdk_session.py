"""Session: client wiring, the default bucket and upload_data (under moto where it can)."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from neurondock import ConfigurationError, ResourceNotFound, Session
from neurondock.session import MULTIPART_THRESHOLD, parse_s3_uri

from .conftest import ACCOUNT, REGION

NEURONDOCK_URL = "http://127.0.0.1:8780"


def test_endpoint_url_routes_sagemaker_runtime_and_s3() -> None:
    session = Session(endpoint_url=NEURONDOCK_URL + "/")
    assert session.sagemaker_client.meta.endpoint_url == NEURONDOCK_URL
    assert session.sagemaker_runtime_client.meta.endpoint_url == NEURONDOCK_URL
    assert session.s3_client.meta.endpoint_url == NEURONDOCK_URL + "/s3"
    assert session.s3_client.meta.config.s3["addressing_style"] == "path"
    assert session.sagemaker_runtime_client.meta.config.read_timeout == 70


def test_aws_endpoint_url_environment_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", "http://sm.local:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "http://rt.local:2")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3.local:3")
    session = Session()
    assert session.sagemaker_client.meta.endpoint_url == "http://sm.local:1"
    assert session.sagemaker_runtime_client.meta.endpoint_url == "http://rt.local:2"
    assert session.s3_client.meta.endpoint_url == "http://s3.local:3"
    # STS is asked of the same non-AWS server, never real AWS.
    assert session._sts_client().meta.endpoint_url == "http://sm.local:1"


def test_sts_uses_aws_when_sagemaker_does() -> None:
    assert Session()._sts_client().meta.endpoint_url.endswith("amazonaws.com")


def test_region_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Session(region_name="eu-west-1").region_name == "eu-west-1"
    assert Session(boto_session=boto3.Session(region_name="us-west-2")).boto_region_name == "us-west-2"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert Session(endpoint_url=NEURONDOCK_URL).region_name == "us-east-1"
    with pytest.raises(ConfigurationError, match="region"):
        Session()


def test_default_bucket_is_created_from_the_account(session: Session) -> None:
    bucket = session.default_bucket()
    assert bucket == f"sagemaker-{REGION}-{ACCOUNT}"
    assert bucket in [b["Name"] for b in session.s3_client.list_buckets()["Buckets"]]
    assert session.default_bucket() == bucket  # cached, created once


def test_default_bucket_outside_us_east_1_sets_location(aws: None) -> None:
    session = Session(region_name="eu-west-1")
    bucket = session.default_bucket()
    assert bucket == f"sagemaker-eu-west-1-{ACCOUNT}"
    assert session.s3_client.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"


def test_default_bucket_reuses_existing_and_explicit_name(aws: None) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="mine")
    assert Session(default_bucket="mine").default_bucket() == "mine"
    s3.create_bucket(Bucket=f"sagemaker-{REGION}-{ACCOUNT}")
    assert Session().default_bucket() == f"sagemaker-{REGION}-{ACCOUNT}"


def test_default_bucket_falls_back_when_sts_is_unavailable(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare neurondock may not implement STS; the bucket name must not depend on it."""
    sts = boto3.client("sts", region_name=REGION)
    stubber = Stubber(sts)
    stubber.add_client_error("get_caller_identity", "InvalidAction", http_status_code=400)
    stubber.activate()
    monkeypatch.setattr(session, "_sts_client", lambda: sts)
    assert session.account_id() is None
    assert session.default_bucket() == f"sagemaker-{REGION}-neurondock"
    assert session.expand_role("MyRole") == "arn:aws:iam::000000000000:role/MyRole"


def test_expand_role(session: Session) -> None:
    assert session.expand_role("arn:aws:iam::1:role/x") == "arn:aws:iam::1:role/x"
    assert session.expand_role("SageMakerRole") == f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
    assert session.expand_role(None) == f"arn:aws:iam::{ACCOUNT}:role/NeurondockExecutionRole"


def test_upload_data_file_and_folder(session: Session, tmp_path: Path) -> None:
    file = tmp_path / "one.txt"
    file.write_text("1")
    folder = tmp_path / "dir"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"a")
    (folder / "sub" / "b.bin").write_bytes(b"b")

    uri = session.upload_data(file)
    assert uri == f"s3://sagemaker-{REGION}-{ACCOUNT}/data/one.txt"
    session.s3_client.create_bucket(Bucket="explicit")
    assert session.upload_data(folder, bucket="explicit", key_prefix="/ds/v1/") == "s3://explicit/ds/v1"
    keys = [o["Key"] for o in session.s3_client.list_objects_v2(Bucket="explicit")["Contents"]]
    assert sorted(keys) == ["ds/v1/a.bin", "ds/v1/sub/b.bin"]
    with pytest.raises(ConfigurationError, match="No such file"):
        session.upload_data(tmp_path / "missing")


def test_upload_data_large_file_goes_multipart(session: Session, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(MULTIPART_THRESHOLD + 1024 * 1024))  # 9 MiB: two parts
    bucket, key = parse_s3_uri(session.upload_data(big, key_prefix="big"))
    head = session.s3_client.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == big.stat().st_size
    assert head["ETag"].strip('"').endswith("-2")  # multipart ETags carry the part count


def test_download_file_and_errors(session: Session, tmp_path: Path) -> None:
    source = tmp_path / "x.txt"
    source.write_text("payload")
    uri = session.upload_data(source)
    assert session.download_file(uri, tmp_path / "back.txt").read_text() == "payload"
    with pytest.raises(ConfigurationError, match="Not an S3 URI"):
        parse_s3_uri("/local/path")
    with pytest.raises(ResourceNotFound):
        session.download_file(f"s3://{session.default_bucket()}/missing", tmp_path / "nope")
