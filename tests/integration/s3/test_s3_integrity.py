"""SigV4 failures and body integrity: nothing is stored unless signature, hash and checksum agree."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import zlib

import pytest
from tests.integration.s3.s3_helpers import (
    error_code,
    key_path,
    parse_xml,
    send,
    sign_s3,
    signed_chunked_body,
    unsigned_trailer_body,
)

pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

DATA = b"integrity matters " * 5000


def _crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _absent(s3_request, bucket, key="k"):
    return s3_request("HEAD", key_path(bucket, key)).status_code == 404


def test_bad_signature(s3_request, bucket):
    resp = s3_request("PUT", key_path(bucket, "k"), body=b"x", secret_key="wrong-secret")
    assert resp.status_code == 403
    error = parse_xml(resp.data)
    assert error.findtext("Code") == "SignatureDoesNotMatch"
    assert error.findtext("AWSAccessKeyId") == "AKNDTESTROOT00000001"
    assert _absent(s3_request, bucket)


def test_unknown_access_key(s3_request, bucket):
    resp = s3_request("GET", f"/{bucket}?list-type=2", access_key="AKNDNOBODY0000000000")
    assert resp.status_code == 403
    assert error_code(resp) == "InvalidAccessKeyId"


def test_skewed_clock(client, bucket, s3_request):
    when = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    headers = sign_s3("GET", f"/{bucket}?list-type=2", payload_hash=hashlib.sha256(b"").hexdigest(), when=when)
    resp = send(client, "GET", f"/{bucket}?list-type=2", b"", headers)
    assert resp.status_code == 403
    error = parse_xml(resp.data)
    assert error.findtext("Code") == "RequestTimeTooSkewed"
    assert error.findtext("MaxAllowedSkewMilliseconds") == "900000"


def test_missing_and_malformed_authorization(client, bucket):
    resp = client.get(f"/s3/{bucket}?list-type=2")
    assert resp.status_code == 403
    assert error_code(resp) == "AccessDenied"
    resp = client.get(f"/s3/{bucket}", headers={"Authorization": "AWS4-HMAC-SHA256 Credential=oops"})
    assert resp.status_code == 400
    assert error_code(resp) == "AuthorizationHeaderMalformed"
    head = client.head(f"/s3/{bucket}")
    assert head.status_code == 403
    assert head.data == b""


def test_wrong_service_in_scope(client, bucket):
    headers = sign_s3(
        "GET", f"/{bucket}?list-type=2", payload_hash=hashlib.sha256(b"").hexdigest(), service="sagemaker"
    )
    resp = send(client, "GET", f"/{bucket}?list-type=2", b"", headers)
    assert resp.status_code == 400
    assert error_code(resp) == "AuthorizationHeaderMalformed"


def test_sha256_mismatch_stores_nothing(client, s3_request, bucket):
    claimed = hashlib.sha256(b"what I signed").hexdigest()
    headers = sign_s3("PUT", key_path(bucket, "k"), payload_hash=claimed)
    resp = send(client, "PUT", key_path(bucket, "k"), b"what I sent", headers)
    assert resp.status_code == 400
    error = parse_xml(resp.data)
    assert error.findtext("Code") == "XAmzContentSHA256Mismatch"
    assert error.findtext("ClientComputedContentSHA256") == claimed
    assert error.findtext("S3ComputedContentSHA256") == hashlib.sha256(b"what I sent").hexdigest()
    assert _absent(s3_request, bucket)


def test_sha256_mismatch_keeps_the_previous_version(client, s3_request, bucket, settings):
    assert s3_request("PUT", key_path(bucket, "k"), body=b"v1").status_code == 200
    headers = sign_s3("PUT", key_path(bucket, "k"), payload_hash=hashlib.sha256(b"v2").hexdigest())
    assert send(client, "PUT", key_path(bucket, "k"), b"v2-tampered", headers).status_code == 400
    assert s3_request("GET", key_path(bucket, "k")).data == b"v1"
    assert len(list((settings.objects_dir / bucket / "blobs").iterdir())) == 1


def test_invalid_content_sha256_header(client, s3_request, bucket):
    headers = sign_s3("PUT", key_path(bucket, "k"), payload_hash="not-a-hash")
    resp = send(client, "PUT", key_path(bucket, "k"), b"x", headers)
    assert resp.status_code == 400
    assert error_code(resp) == "InvalidArgument"
    assert _absent(s3_request, bucket)


def test_unsigned_payload_is_accepted(client, s3_request, bucket):
    headers = sign_s3("PUT", key_path(bucket, "k"), payload_hash="UNSIGNED-PAYLOAD")
    assert send(client, "PUT", key_path(bucket, "k"), DATA, headers).status_code == 200
    assert s3_request("GET", key_path(bucket, "k")).data == DATA


def test_crc32_mismatch_stores_nothing(s3_request, bucket):
    resp = s3_request("PUT", key_path(bucket, "k"), body=DATA, headers={"x-amz-checksum-crc32": _crc32(b"other")})
    assert resp.status_code == 400
    error = parse_xml(resp.data)
    assert error.findtext("Code") == "BadDigest"
    assert "CRC32" in error.findtext("Message")
    assert _absent(s3_request, bucket)


@pytest.mark.parametrize(
    ("algorithm", "value"),
    [
        ("crc32c", "4waSgw=="),  # CRC32C("123456789") = 0xE3069283
        ("sha1", base64.b64encode(hashlib.sha1(b"123456789").digest()).decode()),
        ("sha256", base64.b64encode(hashlib.sha256(b"123456789").digest()).decode()),
        ("crc64nvme", "rosUhgp5mIg="),  # CRC64NVME("123456789") = 0xAE8B14860A799888
    ],
)
def test_other_checksum_algorithms(s3_request, bucket, algorithm, value):
    resp = s3_request("PUT", key_path(bucket, "k"), body=b"123456789", headers={f"x-amz-checksum-{algorithm}": value})
    assert resp.status_code == 200, resp.data
    assert resp.headers[f"x-amz-checksum-{algorithm}"] == value
    resp = s3_request("PUT", key_path(bucket, "k2"), body=b"12345678X", headers={f"x-amz-checksum-{algorithm}": value})
    assert error_code(resp) == "BadDigest"
    assert _absent(s3_request, bucket, "k2")


def test_content_md5(s3_request, bucket):
    good = base64.b64encode(hashlib.md5(DATA).digest()).decode()
    assert s3_request("PUT", key_path(bucket, "k"), body=DATA, headers={"Content-MD5": good}).status_code == 200
    bad = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    resp = s3_request("PUT", key_path(bucket, "k2"), body=DATA, headers={"Content-MD5": bad})
    assert error_code(resp) == "BadDigest"
    resp = s3_request("PUT", key_path(bucket, "k2"), body=DATA, headers={"Content-MD5": "not base64"})
    assert error_code(resp) == "InvalidDigest"
    assert _absent(s3_request, bucket, "k2")


def test_malformed_checksum_headers(s3_request, bucket):
    # A value that cannot be a CRC32 at all matches nothing: BadDigest, as s3-tests expects of S3.
    for value in ("!!!", "bad", base64.b64encode(b"12345").decode()):
        resp = s3_request("PUT", key_path(bucket, "k"), body=DATA, headers={"x-amz-checksum-crc32": value})
        assert (resp.status_code, error_code(resp)) == (400, "BadDigest"), value
    for headers in [
        {"x-amz-checksum-crc32": _crc32(DATA), "x-amz-checksum-sha1": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="},
        {"x-amz-checksum-md4": "AAAA"},
        {"x-amz-sdk-checksum-algorithm": "CRC32"},
    ]:
        resp = s3_request("PUT", key_path(bucket, "k"), body=DATA, headers=headers)
        assert resp.status_code == 400, headers
        assert error_code(resp) == "InvalidRequest"
    assert _absent(s3_request, bucket)


def _chunked_headers(bucket, payload_hash, decoded_length, **extra):
    return sign_s3(
        "PUT",
        key_path(bucket, "k"),
        payload_hash=payload_hash,
        headers={
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(decoded_length),
            "Content-Type": "text/plain",
            **extra,
        },
    )


def test_aws_chunked_unsigned_trailer(client, s3_request, bucket):
    headers = _chunked_headers(
        bucket, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", len(DATA), **{"x-amz-trailer": "x-amz-checksum-crc32"}
    )
    resp = send(client, "PUT", key_path(bucket, "k"), unsigned_trailer_body(DATA, 8192), headers)
    assert resp.status_code == 200, resp.data
    assert resp.headers["x-amz-checksum-crc32"] == _crc32(DATA)
    got = s3_request("GET", key_path(bucket, "k"))
    assert got.data == DATA
    assert got.headers["ETag"] == f'"{hashlib.md5(DATA).hexdigest()}"'
    # aws-chunked described the transfer only: it is not stored as the object's encoding.
    assert "Content-Encoding" not in got.headers


def test_aws_chunked_trailer_mismatch_and_truncation(client, s3_request, bucket):
    headers = _chunked_headers(
        bucket, "STREAMING-UNSIGNED-PAYLOAD-TRAILER", len(DATA), **{"x-amz-trailer": "x-amz-checksum-crc32"}
    )
    body = unsigned_trailer_body(DATA)
    tampered = body.replace(
        f"x-amz-checksum-crc32:{_crc32(DATA)}".encode(), f"x-amz-checksum-crc32:{_crc32(b'')}".encode()
    )
    resp = send(client, "PUT", key_path(bucket, "k"), tampered, headers)
    assert resp.status_code == 400
    assert error_code(resp) == "BadDigest"
    resp = send(client, "PUT", key_path(bucket, "k"), body[: len(body) // 2], headers)
    assert resp.status_code == 400
    assert error_code(resp) == "IncompleteBody"
    resp = send(client, "PUT", key_path(bucket, "k"), b"zz\r\n" + body, headers)
    assert error_code(resp) == "InvalidRequest"
    assert _absent(s3_request, bucket)


def test_aws_chunked_signed_chunks(client, s3_request, bucket):
    headers = _chunked_headers(bucket, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", len(DATA))
    body = signed_chunked_body(DATA, headers, chunk_size=16384)
    resp = send(client, "PUT", key_path(bucket, "k"), body, headers)
    assert resp.status_code == 200, resp.data
    assert s3_request("GET", key_path(bucket, "k")).data == DATA

    headers = _chunked_headers(bucket, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", len(DATA))
    body = bytearray(signed_chunked_body(DATA.upper(), headers, chunk_size=16384))
    # Flip one byte of the second chunk's data: its signature no longer matches.
    at = body.index(b"\r\n", body.index(b"\r\n") + 2 + 16384) + 10
    body[at] ^= 0x20
    resp = send(client, "PUT", key_path(bucket, "k"), bytes(body), headers)
    assert resp.status_code == 403
    assert error_code(resp) == "SignatureDoesNotMatch"
    assert s3_request("GET", key_path(bucket, "k")).data == DATA


def test_unsupported_streaming_mode(client, bucket):
    headers = _chunked_headers(bucket, "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", 1)
    resp = send(client, "PUT", key_path(bucket, "k"), b"1\r\nx\r\n0\r\n\r\n", headers)
    assert resp.status_code == 501
    assert error_code(resp) == "NotImplemented"


def test_errors_are_never_json_or_500(client, s3_request, bucket):
    weird = [
        ("GET", f"/{bucket}?list-type=3"),
        ("GET", f"/{bucket}?uploads&max-uploads=nan"),
        ("GET", f"/{bucket}/k?partNumber=abc"),
        ("POST", f"/{bucket}/k"),
        ("POST", f"/{bucket}"),
        ("PUT", f"/{bucket}?versioning"),
        ("DELETE", f"/{bucket}/k?uploadId="),
    ]
    assert s3_request("PUT", key_path(bucket, "k"), body=b"x").status_code == 200
    for method, path in weird:
        resp = s3_request(method, path)
        assert 400 <= resp.status_code < 500 or resp.status_code == 501, (method, path, resp.status_code)
        assert resp.headers["Content-Type"] == "application/xml", (method, path)
        assert parse_xml(resp.data).tag == "Error"


def test_aws_chunked_without_a_streaming_payload_hash_is_refused(client, s3_request, bucket):
    """An aws-chunked body whose request names no STREAMING-* hash (curl --aws-sigv4 signs no
    x-amz-content-sha256 at all) would be stored with its chunk framing: refused, not guessed at."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from tests.conftest import ACCESS_KEY, SECRET_KEY

    body = unsigned_trailer_body(DATA)
    path = key_path(bucket, "k")
    for extra in ({}, {"x-amz-content-sha256": hashlib.sha256(body).hexdigest()}):
        request = AWSRequest(
            method="PUT",
            url="http://localhost/s3" + path,
            data=body,
            headers={"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(DATA)), **extra},
        )
        SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
        resp = send(client, "PUT", path, body, dict(request.headers.items()))
        assert resp.status_code == 400, (extra, resp.data)
        assert error_code(resp) == "InvalidRequest"
        assert "aws-chunked" in parse_xml(resp.data).findtext("Message")
    assert _absent(s3_request, bucket)
