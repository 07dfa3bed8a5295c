"""Edge cases of S3's wire that ceph's s3-tests found, driven by real boto3 against a live store
(docs/s3.md): presigned-URL expiry, non-ASCII user metadata, undecodable paths, a part uploaded twice."""

from __future__ import annotations

import email.header
import hashlib
import http.client
import socket
import urllib.parse

import pytest
import requests
from botocore.exceptions import ClientError


@pytest.fixture(scope="module")
def s3(live_store):
    return live_store.client()


@pytest.fixture
def bucket(s3, request) -> str:
    name = "edge-" + hashlib.md5(request.node.name.encode()).hexdigest()[:12]
    s3.create_bucket(Bucket=name)
    return name


def _error(info: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def _xml_error(response: requests.Response) -> tuple[int, str, str]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(response.content)
    return response.status_code, root.findtext("Code") or "", root.findtext("Message") or ""


# -- presigned URLs: expired is 403, a malformed X-Amz-Expires is 400, each with S3's message


def test_presigned_url_expiry_answers_as_s3(live_store, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"payload")
    v4 = live_store.client(signature_version="s3v4")

    def get(expires: int) -> requests.Response:
        params = {"Bucket": bucket, "Key": "k"}
        return requests.get(v4.generate_presigned_url("get_object", Params=params, ExpiresIn=expires), timeout=10)

    assert _xml_error(get(0)) == (403, "AccessDenied", "Request has expired")
    assert _xml_error(get(-1000)) == (400, "AuthorizationQueryParametersError", "X-Amz-Expires must be non-negative")
    status, code, message = _xml_error(get(7 * 24 * 3600 + 1))
    assert (status, code) == (400, "AuthorizationQueryParametersError")
    assert message.startswith("X-Amz-Expires must be less than a week (in seconds)")
    url = v4.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60)
    garbled = url.replace("X-Amz-Expires=60", "X-Amz-Expires=soon")
    expected = (400, "AuthorizationQueryParametersError", "X-Amz-Expires should be a number")
    assert _xml_error(requests.get(garbled, timeout=10)) == expected
    week = get(7 * 24 * 3600)
    assert (week.status_code, week.content) == (200, b"payload")


# -- user metadata: non-ASCII text is stored as text and returned RFC 2047-encoded


def _raw_metadata_client(live_store, value: str):
    """A boto3 client whose PutObject carries ``x-amz-meta-meta1: value`` as raw header text (s3-tests'
    trick: boto3's own parameter validation refuses non-ASCII metadata, botocore sends the header as UTF-8)."""
    client = live_store.client()

    def set_header(params, **_):
        params["headers"]["x-amz-meta-meta1"] = value

    client.meta.events.register("before-call.s3.PutObject", set_header)
    client.meta.events.register("before-call.s3.CopyObject", set_header)
    return client


def _decoded(value: str) -> str:
    return str(email.header.make_header(email.header.decode_header(value)))


def test_non_ascii_metadata_is_returned_rfc2047_encoded(live_store, s3, bucket):
    text = "Hello World\xe9 \u4e2d\u6587"
    _raw_metadata_client(live_store, text).put_object(Bucket=bucket, Key="raw", Body=b"bar")
    encoded = s3.get_object(Bucket=bucket, Key="raw")["Metadata"]["meta1"]
    assert encoded.isascii() and encoded.startswith("=?UTF-8?")
    assert _decoded(encoded) == text
    assert s3.head_object(Bucket=bucket, Key="raw")["Metadata"]["meta1"] == encoded

    # A client that encodes the value itself (RFC 2047 is ASCII, so boto3 lets it through) gets the same back.
    s3.put_object(Bucket=bucket, Key="pre", Body=b"bar", Metadata={"meta1": encoded})
    assert s3.head_object(Bucket=bucket, Key="pre")["Metadata"]["meta1"] == encoded

    # CopyObject with REPLACE reads new metadata the same way.
    _raw_metadata_client(live_store, "caf\xe9").copy_object(
        Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "raw"}, MetadataDirective="REPLACE"
    )
    assert _decoded(s3.head_object(Bucket=bucket, Key="copy")["Metadata"]["meta1"]) == "caf\xe9"

    # ASCII is returned as sent, even when it merely looks like an encoded-word.
    s3.put_object(Bucket=bucket, Key="ascii", Body=b"bar", Metadata={"a": "plain", "b": "=?not-a-word"})
    assert s3.head_object(Bucket=bucket, Key="ascii")["Metadata"] == {"a": "plain", "b": "=?not-a-word"}


# -- keys: any UTF-8 is a key; a path whose escapes are not UTF-8 is InvalidURI


def test_path_that_is_not_utf8_is_invalid_uri(live_store, s3, bucket):
    client = live_store.client()

    def undecodable(request, **_):
        request.url = request.url.replace("/placeholder", "/%AE%8A-")

    client.meta.events.register("before-send.s3.GetObject", undecodable)
    client.meta.events.register("before-send.s3.PutObject", undecodable)
    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=bucket, Key="placeholder")
    assert _error(info) == (400, "InvalidURI", "Couldn't parse the specified URI.")
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=bucket, Key="placeholder", Body=b"x")
    assert _error(info)[:2] == (400, "InvalidURI")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)

    # The characters s3-tests' test_object_read_unreadable names are valid UTF-8: an ordinary key.
    key = "\xae\x8a-"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key=key)
    assert _error(info)[:2] == (404, "NoSuchKey")
    s3.put_object(Bucket=bucket, Key=key, Body=b"readable")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"readable"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]


# -- a part uploaded twice: the upload that finishes last is the part


def test_part_uploaded_twice_the_upload_finishing_last_wins(live_store, s3, bucket):
    v4 = live_store.client(signature_version="s3v4")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    first, second = b"A" * 4096, b"B" * 4096
    params = {"Bucket": bucket, "Key": "mp", "UploadId": upload_id, "PartNumber": 1}
    url = urllib.parse.urlsplit(v4.generate_presigned_url("upload_part", Params=params, ExpiresIn=60))

    # The first upload starts and stalls halfway through its body ...
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.putrequest("PUT", f"{url.path}?{url.query}")
    conn.putheader("Content-Length", str(len(first)))
    conn.endheaders()
    conn.send(first[:2048])
    # ... while a second upload of the same part starts and finishes ...
    resent = s3.upload_part(Body=second, **params)["ETag"]
    assert [p["ETag"] for p in s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)["Parts"]] == [resent]
    # ... then the first one finishes last: it is the part now.
    conn.send(first[2048:])
    response = conn.getresponse()
    assert response.status == 200, response.read()
    last = response.getheader("ETag")
    conn.close()
    assert last == f'"{hashlib.md5(first).hexdigest()}"'
    assert [p["ETag"] for p in s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)["Parts"]] == [last]

    with pytest.raises(ClientError) as info:  # the overwritten upload's ETag no longer names a part
        s3.complete_multipart_upload(
            Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": resent}]}
        )
    assert _error(info)[:2] == (400, "InvalidPart")
    with pytest.raises(ClientError) as info:  # S3 refuses a part number listed twice
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="mp",
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": resent}, {"PartNumber": 1, "ETag": last}]},
        )
    assert _error(info)[:2] == (400, "InvalidPartOrder")
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": last}]}
    )
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == first


# -- Expect: 100-continue: a request refused before its body answers the refusal, never "100 Continue"


def test_anonymous_upload_expecting_continue_is_refused_without_continue(live_store, s3, bucket):
    url = urllib.parse.urlsplit(live_store.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        conn.sendall(
            f"PUT {url.path}/{bucket}/obj HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: 123\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        status_line = conn.recv(4096).split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 403 Forbidden"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    # A signed upload still gets its "100 Continue" (botocore sends Expect on PutObject) and succeeds.
    s3.put_object(Bucket=bucket, Key="signed", Body=b"x" * 2_000_000)
    assert s3.head_object(Bucket=bucket, Key="signed")["ContentLength"] == 2_000_000
