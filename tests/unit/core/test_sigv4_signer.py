"""sigv4.sign, as the host process's model-data reads use it, against botocore's own signing of the same request."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from neurondock_platform import sigv4
from neurondock_platform.s3_client import StoreKeys, make_s3_client
from neurondock_workers.hosting.s3 import ObjectReader

NOW = dt.datetime(2026, 12, 7, 3, 4, 5, tzinfo=dt.UTC)
EMPTY = hashlib.sha256(b"").hexdigest()
KEYS = StoreKeys("123456789012", "http://127.0.0.1:8080/s3", "eu-west-1", "ASIAEXAMPLE0000001", "secret/with+chars")

CASES = [
    ("http://127.0.0.1:8080/s3", "models", "m/model.tar.gz"),
    ("http://127.0.0.1:8080/s3/", "models", "a b/ü+é=~*(1)!'@$&;,.tar.gz"),
    ("https://s3.example.com", "bucket.with.dots", "deep//path/./x%20y.tar.gz"),
    ("http://store.internal:80", "b", "k"),
]


def _botocore_headers(method: str, url: str, token: str | None) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, headers={})
    credentials = Credentials(KEYS.access_key_id, KEYS.secret_access_key, token)
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        S3SigV4Auth(credentials, "s3", KEYS.region).add_auth(request)
    return {k.lower(): v for k, v in request.headers.items()}


def _botocore_url(endpoint: str, bucket: str, key: str) -> str:
    """The URL a path-style botocore S3 client sends a HeadObject to."""
    client = make_s3_client(endpoint, KEYS.region, access_key_id="AK", secret_access_key="SK")
    seen: list[str] = []

    def capture(request: Any, **_: Any) -> None:
        seen.append(request.url)
        raise _Sent

    client.meta.events.register("before-send.s3.HeadObject", capture)
    with pytest.raises(_Sent):
        client.head_object(Bucket=bucket, Key=key)
    return seen[0]


class _Sent(Exception):
    pass


@pytest.mark.parametrize(("endpoint", "bucket", "key"), CASES)
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzE//session+token="])
@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_the_signer_signs_as_botocore_does(endpoint, bucket, key, token, method):
    reader = ObjectReader(StoreKeys(**{**KEYS.__dict__, "endpoint_url": endpoint, "session_token": token}))
    sent = _botocore_url(endpoint, bucket, key)
    # The same request line as botocore's path-style client: the same path, encoded the same way.
    assert reader._path(bucket, key) == urlsplit(sent).path

    ours = reader.signed_headers(method, bucket, key, now=NOW.timestamp())
    theirs = _botocore_headers(method, sent, token)
    assert ours["authorization"] == theirs["authorization"]
    assert ours["x-amz-date"] == theirs["x-amz-date"] == "20261207T030405Z"
    assert ours.get("x-amz-security-token") == theirs.get("x-amz-security-token") == token


def test_the_verifier_accepts_what_the_signer_signs():
    headers = {"host": "127.0.0.1:8080"}
    sigv4.sign(
        "GET",
        "/s3/models/a b.tar.gz",
        headers,
        access_key_id="AK",
        secret_access_key="SK",
        region="us-east-1",
        service="s3",
        payload_hash=EMPTY,
        now=NOW.timestamp(),
    )

    class Source:
        def cached(self, key: str) -> sigv4.Credential | None:
            return self.lookup(key)

        def lookup(self, key: str) -> sigv4.Credential | None:
            return sigv4.Credential("SK", "123456789012") if key == "AK" else None

    verifier = sigv4.Verifier(Source(), region="us-east-1", clock=NOW.timestamp)
    request = sigv4.Request("GET", "/s3/models/a b.tar.gz", "", headers, None)
    assert verifier.verify(request, services={"s3"}).account_id == "123456789012"
    headers["authorization"] = headers["authorization"][:-1] + ("0" if headers["authorization"][-1] != "0" else "1")
    with pytest.raises(sigv4.InvalidSignatureException):
        verifier.verify(request, services={"s3"})
