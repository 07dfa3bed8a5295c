"""Real boto3 and the AWS CLI against the store served by uvicorn on a loopback port."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.integration.s3.s3_helpers import sign_s3, unsigned_trailer_body

pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

AWS_CLI = Path(sys.executable).with_name("aws")
MIB = 1024 * 1024


@pytest.fixture
def s3(live_server):
    return boto3.client(
        "s3",
        endpoint_url=live_server,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )


def test_boto3_basic_operations(s3):
    s3.create_bucket(Bucket="live")
    s3.head_bucket(Bucket="live")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["live"]
    assert s3.get_bucket_location(Bucket="live")["LocationConstraint"] is None

    put = s3.put_object(
        Bucket="live", Key="dir/hello world.txt", Body=b"hello", ContentType="text/plain", Metadata={"k": "v"}
    )
    assert put["ETag"] == f'"{hashlib.md5(b"hello").hexdigest()}"'
    got = s3.get_object(Bucket="live", Key="dir/hello world.txt")
    assert got["Body"].read() == b"hello"
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"k": "v"}
    assert got["ContentLength"] == 5
    head = s3.head_object(Bucket="live", Key="dir/hello world.txt")
    assert head["ETag"] == put["ETag"]
    assert head["LastModified"] == got["LastModified"]

    ranged = s3.get_object(Bucket="live", Key="dir/hello world.txt", Range="bytes=1-3")
    assert ranged["Body"].read() == b"ell"
    assert ranged["ContentRange"] == "bytes 1-3/5"

    for i in range(5):
        s3.put_object(Bucket="live", Key=f"many/{i} +é", Body=str(i).encode())
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket="live", Prefix="many/", PaginationConfig={"PageSize": 2}
    )
    assert [o["Key"] for page in pages for o in page.get("Contents", [])] == [f"many/{i} +é" for i in range(5)]
    listed = s3.list_objects_v2(Bucket="live", Delimiter="/")
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["dir/", "many/"]

    s3.copy_object(Bucket="live", Key="copy", CopySource={"Bucket": "live", "Key": "dir/hello world.txt"})
    assert s3.get_object(Bucket="live", Key="copy")["Body"].read() == b"hello"

    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="live", Key="missing")
    assert info.value.response["Error"]["Code"] == "NoSuchKey"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket="live", Key="missing")
    assert info.value.response["Error"]["Code"] == "404"
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket="live")
    assert info.value.response["Error"]["Code"] == "BucketNotEmpty"
    assert s3.create_bucket(Bucket="live")["ResponseMetadata"]["HTTPStatusCode"] == 200  # us-east-1 legacy

    deleted = s3.delete_objects(
        Bucket="live",
        Delete={"Objects": [{"Key": o["Key"]} for o in s3.list_objects_v2(Bucket="live")["Contents"]]},
    )
    assert len(deleted["Deleted"]) == 7
    s3.delete_object(Bucket="live", Key="never-existed")
    s3.delete_bucket(Bucket="live")
    assert s3.list_buckets()["Buckets"] == []


def test_boto3_checksum_validation_on_get(s3):
    s3.create_bucket(Bucket="sums")
    s3.put_object(Bucket="sums", Key="k", Body=b"abc" * 1000, ChecksumAlgorithm="SHA256")
    got = s3.get_object(Bucket="sums", Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"abc" * 1000
    assert got["ChecksumSHA256"]


def test_boto3_multipart_upload_and_download(s3, tmp_path):
    s3.create_bucket(Bucket="big")
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(20 * MIB))
    # Default transfer config: 8 MiB parts, 10 threads -> a 3-part upload, parts sent in parallel.
    s3.upload_file(str(source), "big", "artifacts/model.bin")
    head = s3.head_object(Bucket="big", Key="artifacts/model.bin")
    assert head["ContentLength"] == 20 * MIB
    assert head["ETag"].endswith('-3"')
    target = tmp_path / "downloaded.bin"
    s3.download_file("big", "artifacts/model.bin", str(target), Config=TransferConfig(multipart_chunksize=4 * MIB))
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()
    assert s3.list_multipart_uploads(Bucket="big").get("Uploads", []) == []
    ranged = s3.get_object(Bucket="big", Key="artifacts/model.bin", Range=f"bytes={10 * MIB}-{10 * MIB + 9}")
    assert ranged["Body"].read() == source.read_bytes()[10 * MIB : 10 * MIB + 10]


def test_boto3_multipart_api_calls(s3):
    s3.create_bucket(Bucket="mpu")
    upload = s3.create_multipart_upload(Bucket="mpu", Key="k")
    part = s3.upload_part(Bucket="mpu", Key="k", UploadId=upload["UploadId"], PartNumber=1, Body=b"only part")
    parts = s3.list_parts(Bucket="mpu", Key="k", UploadId=upload["UploadId"])["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [(1, part["ETag"], 9)]
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket="mpu")["Uploads"]] == ["k"]
    done = s3.complete_multipart_upload(
        Bucket="mpu",
        Key="k",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert done["ETag"].endswith('-1"')
    other = s3.create_multipart_upload(Bucket="mpu", Key="aborted")
    s3.abort_multipart_upload(Bucket="mpu", Key="aborted", UploadId=other["UploadId"])
    with pytest.raises(ClientError) as info:
        s3.list_parts(Bucket="mpu", Key="aborted", UploadId=other["UploadId"])
    assert info.value.response["Error"]["Code"] == "NoSuchUpload"


def test_transfer_encoding_chunked_aws_chunked_body(live_server, s3):
    """What botocore sends over TLS: no Content-Length, aws-chunked with a CRC32 trailer."""
    s3.create_bucket(Bucket="chunky")
    data = os.urandom(300_000)
    url = urlsplit(live_server)
    path = "/chunky/streamed"
    headers = sign_s3(
        "PUT",
        path,
        payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        headers={
            "Host": url.netloc,
            "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(data)),
            "x-amz-trailer": "x-amz-checksum-crc32",
            "Transfer-Encoding": "chunked",
        },
    )
    body = unsigned_trailer_body(data)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("PUT", url.path + path, skip_host=True, skip_accept_encoding=True)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    for i in range(0, len(body), 50_000):
        piece = body[i : i + 50_000]
        conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    conn.close()
    assert s3.get_object(Bucket="chunky", Key="streamed")["Body"].read() == data


def test_expect_100_continue_is_answered(live_server, s3):
    """boto3 sends Expect: 100-continue on uploads and waits for the interim response before the body."""
    s3.create_bucket(Bucket="expect")
    url = urlsplit(live_server)
    body = os.urandom(64 * 1024)
    headers = sign_s3(
        "PUT",
        "/expect/k",
        payload_hash=hashlib.sha256(body).hexdigest(),
        headers={"Host": url.netloc, "Expect": "100-continue", "Content-Length": str(len(body))},
    )
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        head = f"PUT {url.path}/expect/k HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(head.encode() + b"\r\n")
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        final = b""
        while b"\r\n\r\n" not in final:
            final += sock.recv(4096)
        assert final.startswith(b"HTTP/1.1 200 OK")
    assert s3.get_object(Bucket="expect", Key="k")["Body"].read() == body


def _http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    conn.request(method, f"{parts.path}?{parts.query}", body=body)
    resp = conn.getresponse()
    result = resp.status, resp.read()
    conn.close()
    return result


@pytest.mark.parametrize("signature_version", [None, "s3v4"])
def test_presigned_urls(live_server, s3, signature_version):
    presigner = boto3.client(
        "s3",
        endpoint_url=live_server,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(signature_version=signature_version) if signature_version else None,
    )
    s3.create_bucket(Bucket="pre")
    s3.put_object(Bucket="pre", Key="a b/c+d", Body=b"data")
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": "pre", "Key": "a b/c+d"}, ExpiresIn=60)
    assert _http("GET", url) == (200, b"data")

    put_url = presigner.generate_presigned_url("put_object", Params={"Bucket": "pre", "Key": "up"}, ExpiresIn=60)
    assert _http("PUT", put_url, b"uploaded")[0] == 200
    assert s3.get_object(Bucket="pre", Key="up")["Body"].read() == b"uploaded"

    # A URL signed for one key does not open another.
    status, body = _http("GET", url.replace("a%20b/c%2Bd", "up"))
    assert status == 403
    assert b"<Code>SignatureDoesNotMatch</Code>" in body

    past = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=2)
    with (
        mock.patch("botocore.auth.get_current_datetime", return_value=past),
        mock.patch("botocore.auth.time.time", return_value=past.replace(tzinfo=dt.UTC).timestamp()),
    ):
        stale = presigner.generate_presigned_url("get_object", Params={"Bucket": "pre", "Key": "up"}, ExpiresIn=3600)
    status, body = _http("GET", stale)
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body
    assert b"Request has expired" in body


def _aws(live_server: str, *args: str, cwd: Path) -> str:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(cwd),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    result = subprocess.run(
        [str(AWS_CLI), *args, "--endpoint-url", live_server],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(not AWS_CLI.exists(), reason="the AWS CLI is not installed in this environment")
def test_aws_cli_cp_ls_rm(live_server, s3, tmp_path):
    s3.create_bucket(Bucket="cli")
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "a.txt").write_bytes(b"alpha")
    (tmp_path / "tree" / "sub" / "b.bin").write_bytes(os.urandom(9 * MIB))
    _aws(live_server, "s3", "cp", "--recursive", str(tmp_path / "tree"), "s3://cli/tree/", cwd=tmp_path)
    listing = _aws(live_server, "s3", "ls", "--recursive", "s3://cli/", cwd=tmp_path)
    assert "tree/a.txt" in listing
    assert "tree/sub/b.bin" in listing
    assert (
        s3.get_object(Bucket="cli", Key="tree/sub/b.bin")["Body"].read()
        == (tmp_path / "tree" / "sub" / "b.bin").read_bytes()
    )

    _aws(live_server, "s3", "cp", "s3://cli/tree/a.txt", "s3://cli/copied/a.txt", cwd=tmp_path)
    _aws(live_server, "s3", "cp", "s3://cli/copied/a.txt", str(tmp_path / "back.txt"), cwd=tmp_path)
    assert (tmp_path / "back.txt").read_bytes() == b"alpha"
    assert "PRE tree/" in _aws(live_server, "s3", "ls", "s3://cli/", cwd=tmp_path)

    _aws(live_server, "s3", "rm", "--recursive", "s3://cli/", cwd=tmp_path)
    assert s3.list_objects_v2(Bucket="cli")["KeyCount"] == 0
    _aws(live_server, "s3", "rb", "s3://cli", cwd=tmp_path)
    assert s3.list_buckets()["Buckets"] == []
