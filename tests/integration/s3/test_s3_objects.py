"""Object operations over the signed rest-xml API: put/get/head/delete, ranges, listing, copy."""

from __future__ import annotations

import base64
import hashlib
import zlib
from urllib.parse import quote

import pytest
from tests.integration.s3.s3_helpers import error_code, key_path, parse_xml

# Object semantics do not depend on the database; the bucket tests cover both backends.
pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

BODY = b"0123456789" * 10


def _crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _put(s3_request, bucket, key, body=b"x", **headers):
    resp = s3_request("PUT", key_path(bucket, key), body=body, headers=headers)
    assert resp.status_code == 200, resp.data
    return resp


def test_put_get_round_trip(s3_request, bucket):
    resp = _put(
        s3_request,
        bucket,
        "docs/readme.txt",
        BODY,
        **{
            "Content-Type": "text/plain",
            "x-amz-meta-Owner": "Ada",
            "x-amz-meta-run": "42",
            "Cache-Control": "max-age=60",
            "Content-Disposition": 'attachment; filename="r.txt"',
            "x-amz-checksum-crc32": _crc32(BODY),
            "x-amz-sdk-checksum-algorithm": "CRC32",
        },
    )
    etag = f'"{hashlib.md5(BODY).hexdigest()}"'
    assert resp.headers["ETag"] == etag
    assert resp.headers["x-amz-checksum-crc32"] == _crc32(BODY)
    assert resp.data == b""

    got = s3_request("GET", key_path(bucket, "docs/readme.txt"))
    assert got.status_code == 200
    assert got.data == BODY
    assert got.headers["ETag"] == etag
    assert got.headers["Content-Type"] == "text/plain"
    assert got.headers["Content-Length"] == str(len(BODY))
    assert got.headers["Last-Modified"].endswith(" GMT")
    assert got.headers["x-amz-meta-owner"] == "Ada"
    assert got.headers["x-amz-meta-run"] == "42"
    assert got.headers["Cache-Control"] == "max-age=60"
    assert got.headers["Content-Disposition"] == 'attachment; filename="r.txt"'
    assert got.headers["Accept-Ranges"] == "bytes"
    assert "x-amz-checksum-crc32" not in got.headers

    checked = s3_request("GET", key_path(bucket, "docs/readme.txt"), headers={"x-amz-checksum-mode": "ENABLED"})
    assert checked.headers["x-amz-checksum-crc32"] == _crc32(BODY)


def test_default_content_type_and_empty_object(s3_request, bucket):
    _put(s3_request, bucket, "empty", b"")
    got = s3_request("GET", key_path(bucket, "empty"))
    assert got.status_code == 200
    assert got.data == b""
    assert got.headers["Content-Type"] == "binary/octet-stream"
    assert got.headers["ETag"] == f'"{hashlib.md5(b"").hexdigest()}"'


def test_overwrite_replaces_object(s3_request, bucket, settings):
    _put(s3_request, bucket, "k", b"first", **{"x-amz-meta-v": "1"})
    _put(s3_request, bucket, "k", b"second")
    got = s3_request("GET", key_path(bucket, "k"))
    assert got.data == b"second"
    assert "x-amz-meta-v" not in got.headers
    # The first version's bytes are gone from disk.
    assert len(list((settings.objects_dir / bucket / "blobs").iterdir())) == 1


def test_head_object(s3_request, bucket):
    _put(s3_request, bucket, "h", BODY, **{"x-amz-meta-a": "b", "Content-Type": "application/json"})
    head = s3_request("HEAD", key_path(bucket, "h"))
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["Content-Length"] == str(len(BODY))
    assert head.headers["Content-Type"] == "application/json"
    assert head.headers["x-amz-meta-a"] == "b"
    missing = s3_request("HEAD", key_path(bucket, "nope"))
    assert missing.status_code == 404
    assert missing.data == b""


def test_get_missing_key(s3_request, bucket):
    resp = s3_request("GET", key_path(bucket, "no/such key"))
    assert resp.status_code == 404
    error = parse_xml(resp.data)
    assert error.findtext("Code") == "NoSuchKey"
    assert error.findtext("Message") == "The specified key does not exist."
    assert error.findtext("Key") == "no/such key"
    assert error.findtext("Resource") == f"/{bucket}/no/such key"
    assert error.findtext("RequestId") == resp.headers["x-amz-request-id"]
    assert resp.headers["Content-Type"] == "application/xml"


@pytest.mark.parametrize(
    ("header", "expected", "content_range"),
    [
        ("bytes=0-4", BODY[0:5], "bytes 0-4/100"),
        ("bytes=95-", BODY[95:], "bytes 95-99/100"),
        ("bytes=-3", BODY[-3:], "bytes 97-99/100"),
        ("bytes=90-1000", BODY[90:], "bytes 90-99/100"),
    ],
)
def test_ranged_get(s3_request, bucket, header, expected, content_range):
    _put(s3_request, bucket, "r", BODY)
    resp = s3_request("GET", key_path(bucket, "r"), headers={"Range": header})
    assert resp.status_code == 206
    assert resp.data == expected
    assert resp.headers["Content-Range"] == content_range
    assert resp.headers["Content-Length"] == str(len(expected))


def test_unsatisfiable_and_ignored_ranges(s3_request, bucket):
    _put(s3_request, bucket, "r", BODY)
    resp = s3_request("GET", key_path(bucket, "r"), headers={"Range": "bytes=100-"})
    assert resp.status_code == 416
    assert error_code(resp) == "InvalidRange"
    assert parse_xml(resp.data).findtext("ActualObjectSize") == "100"
    for ignored in ["bytes=5-2", "bytes=0-1,5-6", "items=0-1"]:
        resp = s3_request("GET", key_path(bucket, "r"), headers={"Range": ignored})
        assert resp.status_code == 200
        assert resp.data == BODY


def test_conditional_get(s3_request, bucket):
    etag = _put(s3_request, bucket, "c", BODY).headers["ETag"]
    assert s3_request("GET", key_path(bucket, "c"), headers={"If-None-Match": etag}).status_code == 304
    assert s3_request("GET", key_path(bucket, "c"), headers={"If-Match": etag}).status_code == 200
    resp = s3_request("GET", key_path(bucket, "c"), headers={"If-Match": '"other"'})
    assert resp.status_code == 412
    assert error_code(resp) == "PreconditionFailed"
    future = "Fri, 01 Jan 2100 00:00:00 GMT"
    assert s3_request("GET", key_path(bucket, "c"), headers={"If-Modified-Since": future}).status_code == 304


def test_response_header_overrides(s3_request, bucket):
    _put(s3_request, bucket, "o", BODY)
    resp = s3_request("GET", key_path(bucket, "o") + "?response-content-type=text%2Fcsv")
    assert resp.headers["Content-Type"] == "text/csv"


def test_delete_object_is_idempotent(s3_request, bucket):
    _put(s3_request, bucket, "d")
    assert s3_request("DELETE", key_path(bucket, "d")).status_code == 204
    assert s3_request("DELETE", key_path(bucket, "d")).status_code == 204
    assert s3_request("GET", key_path(bucket, "d")).status_code == 404


@pytest.mark.parametrize(
    "key",
    [
        "with space/and+plus",
        "unicode/é中文🙂",
        "../../../etc/passwd",
        "a/./b/../c",
        "dir/",
        "double//slash",
        "percent%2Fliteral",
        "q?uestion&amp=1#hash",
        "x" * 1024,
        "~tilde.hidden",
        ".",
    ],
)
def test_awkward_keys_round_trip_inside_the_store(s3_request, bucket, settings, tmp_path, key):
    def outside_store():
        store = settings.objects_dir.resolve()
        return {p for p in tmp_path.rglob("*") if not p.resolve().is_relative_to(store)}

    before = outside_store()
    _put(s3_request, bucket, key, key.encode())
    assert s3_request("GET", key_path(bucket, key)).data == key.encode()
    listed = parse_xml(s3_request("GET", f"/{bucket}?list-type=2").data)
    assert [k.text for k in listed.iter("Key")] == [key]
    assert {p for p in outside_store() if "neurondock.db" not in p.name} == {
        p for p in before if "neurondock.db" not in p.name
    }
    assert s3_request("DELETE", key_path(bucket, key)).status_code == 204
    assert not list((settings.objects_dir / bucket / "keys").iterdir())


def test_key_too_long(s3_request, bucket):
    resp = s3_request("PUT", key_path(bucket, "y" * 1025), body=b"x")
    assert resp.status_code == 400
    assert error_code(resp) == "KeyTooLongError"


def test_metadata_too_large(s3_request, bucket):
    resp = s3_request("PUT", key_path(bucket, "m"), body=b"x", headers={"x-amz-meta-big": "v" * 2100})
    assert resp.status_code == 400
    assert error_code(resp) == "MetadataTooLarge"


def _keys(root):
    return [c.findtext("Key") for c in root.findall("Contents")]


def test_list_objects_v2_prefix_delimiter(s3_request, bucket):
    for key in [
        "a.txt",
        "photos/2024/x.jpg",
        "photos/2024/y.jpg",
        "photos/2025/z.jpg",
        "photos/top.jpg",
        "z",
    ]:
        _put(s3_request, bucket, key, b"12345")
    root = parse_xml(s3_request("GET", f"/{bucket}?list-type=2").data)
    assert root.tag == "ListBucketResult"
    assert root.findtext("KeyCount") == "6"
    assert root.findtext("IsTruncated") == "false"
    assert _keys(root)[0] == "a.txt"
    first = root.find("Contents")
    assert first.findtext("Size") == "5"
    assert first.findtext("ETag") == f'"{hashlib.md5(b"12345").hexdigest()}"'
    assert first.findtext("StorageClass") == "STANDARD"
    assert first.findtext("LastModified").endswith("Z")

    root = parse_xml(s3_request("GET", f"/{bucket}?list-type=2&delimiter=%2F").data)
    assert _keys(root) == ["a.txt", "z"]
    assert [p.findtext("Prefix") for p in root.findall("CommonPrefixes")] == ["photos/"]
    assert root.findtext("KeyCount") == "3"

    root = parse_xml(s3_request("GET", f"/{bucket}?list-type=2&delimiter=%2F&prefix=photos%2F").data)
    assert root.findtext("Prefix") == "photos/"
    assert _keys(root) == ["photos/top.jpg"]
    assert [p.findtext("Prefix") for p in root.findall("CommonPrefixes")] == ["photos/2024/", "photos/2025/"]

    root = parse_xml(s3_request("GET", f"/{bucket}?list-type=2&start-after=photos%2F2025%2Fz.jpg").data)
    assert _keys(root) == ["photos/top.jpg", "z"]
    assert root.findtext("StartAfter") == "photos/2025/z.jpg"


def test_list_objects_v2_pagination(s3_request, bucket):
    keys = [f"k{i:02d}" for i in range(7)]
    for key in keys:
        _put(s3_request, bucket, key)
    seen, token, pages = [], None, 0
    while True:
        query = "list-type=2&max-keys=3" + (f"&continuation-token={quote(token)}" if token else "")
        root = parse_xml(s3_request("GET", f"/{bucket}?{query}").data)
        pages += 1
        assert root.findtext("MaxKeys") == "3"
        seen += _keys(root)
        if root.findtext("IsTruncated") == "false":
            assert root.find("NextContinuationToken") is None
            break
        assert root.findtext("KeyCount") == "3"
        token = root.findtext("NextContinuationToken")
    assert seen == keys
    assert pages == 3


def test_list_pagination_over_common_prefixes(s3_request, bucket):
    for key in ["a/1", "a/2", "b/1", "c", "d/1", "d/2"]:
        _put(s3_request, bucket, key)
    entries, token = [], None
    while True:
        query = "list-type=2&delimiter=%2F&max-keys=1" + (f"&continuation-token={quote(token)}" if token else "")
        root = parse_xml(s3_request("GET", f"/{bucket}?{query}").data)
        entries += _keys(root) + [p.findtext("Prefix") for p in root.findall("CommonPrefixes")]
        token = root.findtext("NextContinuationToken")
        if root.findtext("IsTruncated") == "false":
            break
    assert entries == ["a/", "b/", "c", "d/"]


def test_list_url_encoding(s3_request, bucket):
    _put(s3_request, bucket, "sp ace+plus/é")
    root = parse_xml(s3_request("GET", f"/{bucket}?list-type=2&encoding-type=url&delimiter=%2F").data)
    assert root.findtext("EncodingType") == "url"
    assert [p.findtext("Prefix") for p in root.findall("CommonPrefixes")] == ["sp%20ace%2Bplus/"]
    resp = s3_request("GET", f"/{bucket}?list-type=2&encoding-type=base64")
    assert error_code(resp) == "InvalidArgument"


def test_list_bad_arguments(s3_request, bucket):
    assert error_code(s3_request("GET", f"/{bucket}?list-type=2&max-keys=lots")) == "InvalidArgument"
    assert error_code(s3_request("GET", f"/{bucket}?list-type=2&max-keys=-1")) == "InvalidArgument"
    assert error_code(s3_request("GET", f"/{bucket}?list-type=2&continuation-token=%21%21")) == "InvalidArgument"
    root = parse_xml(s3_request("GET", f"/{bucket}?list-type=2&max-keys=5000").data)
    assert root.findtext("MaxKeys") == "1000"


def test_list_objects_v1(s3_request, bucket):
    for key in ["a", "b", "c/1", "c/2", "d"]:
        _put(s3_request, bucket, key)
    root = parse_xml(s3_request("GET", f"/{bucket}?max-keys=2&delimiter=%2F").data)
    assert _keys(root) == ["a", "b"]
    assert root.findtext("IsTruncated") == "true"
    assert root.findtext("NextMarker") == "b"
    root = parse_xml(s3_request("GET", f"/{bucket}?max-keys=2&delimiter=%2F&marker=b").data)
    assert [p.findtext("Prefix") for p in root.findall("CommonPrefixes")] == ["c/"]
    assert _keys(root) == ["d"]
    assert root.find("Contents/Owner/ID").text == "123456789012"


def test_copy_object(s3_request, bucket):
    _put(s3_request, bucket, "src/a b", BODY, **{"x-amz-meta-k": "v", "Content-Type": "text/plain"})
    resp = s3_request("PUT", key_path(bucket, "dst/copy"), headers={"x-amz-copy-source": quote(f"{bucket}/src/a b")})
    assert resp.status_code == 200, resp.data
    result = parse_xml(resp.data)
    assert result.tag == "CopyObjectResult"
    assert result.findtext("ETag") == f'"{hashlib.md5(BODY).hexdigest()}"'
    got = s3_request("GET", key_path(bucket, "dst/copy"))
    assert got.data == BODY
    assert got.headers["x-amz-meta-k"] == "v"
    assert got.headers["Content-Type"] == "text/plain"

    resp = s3_request(
        "PUT",
        key_path(bucket, "dst/replaced"),
        headers={
            "x-amz-copy-source": f"/{bucket}/src/a%20b",
            "x-amz-metadata-directive": "REPLACE",
            "x-amz-meta-new": "1",
            "Content-Type": "application/x-new",
        },
    )
    assert resp.status_code == 200
    got = s3_request("HEAD", key_path(bucket, "dst/replaced"))
    assert got.headers["x-amz-meta-new"] == "1"
    assert "x-amz-meta-k" not in got.headers
    assert got.headers["Content-Type"] == "application/x-new"


def test_copy_object_errors(s3_request, bucket, other_account):
    _put(s3_request, bucket, "src", BODY)
    resp = s3_request("PUT", key_path(bucket, "src"), headers={"x-amz-copy-source": f"{bucket}/src"})
    assert resp.status_code == 400
    assert error_code(resp) == "InvalidRequest"
    resp = s3_request("PUT", key_path(bucket, "dst"), headers={"x-amz-copy-source": f"{bucket}/missing"})
    assert error_code(resp) == "NoSuchKey"
    resp = s3_request("PUT", key_path(bucket, "dst"), headers={"x-amz-copy-source": "nobucket"})
    assert error_code(resp) == "InvalidArgument"
    resp = s3_request(
        "PUT",
        key_path(bucket, "dst"),
        headers={"x-amz-copy-source": f"{bucket}/src", "x-amz-copy-source-if-match": '"nope"'},
    )
    assert resp.status_code == 412
    # Another account can neither read from nor write to this bucket by copying.
    _, access_key, secret = other_account
    assert s3_request("PUT", "/theirs", access_key=access_key, secret_key=secret).status_code == 200
    resp = s3_request(
        "PUT",
        key_path("theirs", "stolen"),
        headers={"x-amz-copy-source": f"{bucket}/src"},
        access_key=access_key,
        secret_key=secret,
    )
    assert resp.status_code == 403
    assert error_code(resp) == "AccessDenied"


def _delete_body(keys, quiet=False):
    objects = "".join(f"<Object><Key>{k}</Key></Object>" for k in keys)
    return f"<Delete><Quiet>{str(quiet).lower()}</Quiet>{objects}</Delete>".encode()


def test_delete_objects(s3_request, bucket):
    for key in ["a", "b", "c"]:
        _put(s3_request, bucket, key)
    body = _delete_body(["a", "b", "never-there", "y" * 1100])
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    resp = s3_request("POST", f"/{bucket}?delete", body=body, headers={"Content-MD5": md5})
    assert resp.status_code == 200, resp.data
    root = parse_xml(resp.data)
    assert root.tag == "DeleteResult"
    assert [d.findtext("Key") for d in root.findall("Deleted")] == ["a", "b", "never-there"]
    assert [(e.findtext("Key")[:3], e.findtext("Code")) for e in root.findall("Error")] == [("yyy", "KeyTooLongError")]
    assert _keys(parse_xml(s3_request("GET", f"/{bucket}?list-type=2").data)) == ["c"]

    body = _delete_body(["c"], quiet=True)
    resp = s3_request("POST", f"/{bucket}?delete", body=body, headers={"x-amz-checksum-crc32": _crc32(body)})
    assert resp.status_code == 200
    assert parse_xml(resp.data).findall("Deleted") == []


def test_delete_objects_requires_a_digest_and_valid_xml(s3_request, bucket):
    body = _delete_body(["a"])
    resp = s3_request("POST", f"/{bucket}?delete", body=body)
    assert resp.status_code == 400
    assert error_code(resp) == "InvalidRequest"
    bad = b"<Delete><Object><Key>a</Key></Object>"
    resp = s3_request("POST", f"/{bucket}?delete", body=bad, headers={"x-amz-checksum-crc32": _crc32(bad)})
    assert error_code(resp) == "MalformedXML"
    md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    resp = s3_request("POST", f"/{bucket}?delete", body=body, headers={"Content-MD5": md5})
    assert error_code(resp) == "BadDigest"
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<Delete><Object><Key>&e;</Key></Object></Delete>"
    )
    resp = s3_request("POST", f"/{bucket}?delete", body=xxe, headers={"x-amz-checksum-crc32": _crc32(xxe)})
    assert error_code(resp) == "MalformedXML"


@pytest.mark.parametrize("multipart", [False, True])
def test_plain_body_is_read_up_to_content_length_from_the_server_input(client, bucket, multipart):
    """The body is read from wsgi.input directly (docs/s3.md): never past Content-Length, never short."""
    import io

    from tests.conftest import sign

    body = b"exact bytes " * 1000
    path = f"/s3/{bucket}/bounded"
    if multipart:
        created = client.open(
            path,
            method="POST",
            query_string="uploads",
            headers=sign("POST", f"http://localhost{path}?uploads", service="s3"),
        )
        upload_id = parse_xml(created.data).findtext("UploadId")
        path_query = f"partNumber=1&uploadId={upload_id}"
    else:
        path_query = ""
    url = f"http://localhost{path}" + (f"?{path_query}" if path_query else "")
    headers = sign(
        "PUT", url, service="s3", body=body, headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest()}
    )
    # More bytes wait on the input than the request declares: a read past Content-Length would take them.
    resp = client.open(
        path,
        method="PUT",
        query_string=path_query,
        headers=headers,
        input_stream=io.BytesIO(body + b"NEXT REQUEST"),
        environ_overrides={"CONTENT_LENGTH": str(len(body))},
    )
    assert resp.status_code == 200, resp.data
    assert resp.headers["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    short = client.open(
        path,
        method="PUT",
        query_string=path_query,
        headers=headers,
        input_stream=io.BytesIO(body[:-1]),
        environ_overrides={"CONTENT_LENGTH": str(len(body))},
    )
    assert short.status_code == 400, short.data
    assert error_code(short) == "IncompleteBody"
