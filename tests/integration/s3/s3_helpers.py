"""Wire-level helpers for the S3 store tests: signing with a chosen payload hash, XML, aws-chunked."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import xml.etree.ElementTree as ET
from typing import Any
from unittest import mock
from urllib.parse import quote, urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum
from tests.conftest import ACCESS_KEY, SECRET_KEY

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def parse_xml(data: bytes) -> ET.Element:
    """Parse a response body and drop the S3 namespace from every tag."""
    root = ET.fromstring(data)
    for node in root.iter():
        node.tag = node.tag.rpartition("}")[2]
    return root


def error_code(resp: Any) -> str:
    root = parse_xml(resp.data)
    assert root.tag == "Error", resp.data
    return root.findtext("Code") or ""


def key_path(bucket: str, key: str) -> str:
    """The request path boto3 would use for a key (quoted once, ``/`` kept)."""
    return f"/{bucket}/{quote(key, safe='/~')}"


class _FixedPayloadAuth(S3SigV4Auth):
    def __init__(self, credentials: Credentials, service: str, region: str, payload_hash: str) -> None:
        super().__init__(credentials, service, region)
        self._payload_hash = payload_hash

    def payload(self, request: AWSRequest) -> str:
        return self._payload_hash


def sign_s3(
    method: str,
    path: str,
    *,
    payload_hash: str,
    headers: dict[str, str] | None = None,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    region: str = "us-east-1",
    service: str = "s3",
    when: dt.datetime | None = None,
) -> dict[str, str]:
    """Sign a request under /s3 claiming ``payload_hash`` as X-Amz-Content-SHA256."""
    req = AWSRequest(method=method, url="http://localhost/s3" + path, data=b"", headers=dict(headers or {}))
    auth = _FixedPayloadAuth(Credentials(access_key, secret_key), service, region, payload_hash)
    if when is None:
        auth.add_auth(req)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
            auth.add_auth(req)
    return dict(req.headers.items())


def send(client: Any, method: str, path: str, body: bytes, headers: dict[str, str]) -> Any:
    parts = urlsplit("http://localhost/s3" + path)
    return client.open(parts.path, method=method, query_string=parts.query, data=body, headers=headers)


def unsigned_trailer_body(data: bytes, chunk_size: int = 64 * 1024) -> bytes:
    """Encode ``data`` the way botocore does over https: aws-chunked with a CRC32 trailer."""
    wrapper = AwsChunkedWrapper(
        io.BytesIO(data),
        checksum_cls=Crc32Checksum,
        checksum_name="x-amz-checksum-crc32",
        chunk_size=chunk_size,
    )
    return wrapper.read()


def signing_key(secret: str, date: str, region: str = "us-east-1", service: str = "s3") -> bytes:
    def h(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    return h(h(h(h(("AWS4" + secret).encode(), date), region), service), "aws4_request")


def signed_chunked_body(
    data: bytes, headers: dict[str, str], chunk_size: int = 64 * 1024, secret: str = SECRET_KEY
) -> bytes:
    """Encode ``data`` as STREAMING-AWS4-HMAC-SHA256-PAYLOAD chunks chained from the request signature."""
    amz_date = headers["X-Amz-Date"]
    seed = headers["Authorization"].rsplit("Signature=", 1)[1]
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    key = signing_key(secret, amz_date[:8])
    pieces = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    out = bytearray()
    previous = seed
    for piece in pieces:
        sts = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz_date,
                scope,
                previous,
                EMPTY_SHA256,
                hashlib.sha256(piece).hexdigest(),
            ]
        )
        signature = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        out += f"{len(piece):x};chunk-signature={signature}\r\n".encode() + piece + b"\r\n"
        previous = signature
    return bytes(out)
