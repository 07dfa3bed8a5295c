"""Multipart uploads over the signed rest-xml API."""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
from tests.integration.s3.s3_helpers import error_code, key_path, parse_xml

pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

MIB = 1024 * 1024
PART1 = os.urandom(5 * MIB)
PART2 = os.urandom(5 * MIB + 3)
PART3 = b"tail"


def _crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _create(s3_request, bucket, key, **headers):
    resp = s3_request("POST", key_path(bucket, key) + "?uploads", headers=headers)
    assert resp.status_code == 200, resp.data
    root = parse_xml(resp.data)
    assert root.tag == "InitiateMultipartUploadResult"
    assert root.findtext("Bucket") == bucket
    assert root.findtext("Key") == key
    return root.findtext("UploadId")


def _part(s3_request, bucket, key, upload_id, number, data, **headers):
    resp = s3_request(
        "PUT",
        key_path(bucket, key) + f"?partNumber={number}&uploadId={quote(upload_id)}",
        body=data,
        headers=headers,
    )
    assert resp.status_code == 200, resp.data
    return resp.headers["ETag"]


def _complete_body(parts):
    inner = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag>{extra}</Part>" for n, etag, extra in parts)
    return f'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{inner}</CompleteMultipartUpload>'.encode()


def _complete(s3_request, bucket, key, upload_id, parts):
    return s3_request("POST", key_path(bucket, key) + f"?uploadId={quote(upload_id)}", body=_complete_body(parts))


def test_multipart_upload_round_trip(s3_request, bucket, settings):
    key = "models/big model.bin"
    upload_id = _create(s3_request, bucket, key, **{"Content-Type": "application/x-tar", "x-amz-meta-job": "7"})
    # Parts arrive out of order and in parallel, as boto3's transfer manager sends them.
    with ThreadPoolExecutor(3) as pool:
        futures = {
            n: pool.submit(_part, s3_request, bucket, key, upload_id, n, data)
            for n, data in [(3, PART3), (1, PART1), (2, PART2)]
        }
    etags = {n: f.result() for n, f in futures.items()}
    assert etags[1] == f'"{hashlib.md5(PART1).hexdigest()}"'
    # Not visible before completion.
    assert s3_request("HEAD", key_path(bucket, key)).status_code == 404

    listed = parse_xml(s3_request("GET", key_path(bucket, key) + f"?uploadId={quote(upload_id)}").data)
    assert listed.tag == "ListPartsResult"
    assert [p.findtext("PartNumber") for p in listed.findall("Part")] == ["1", "2", "3"]
    assert [p.findtext("Size") for p in listed.findall("Part")] == [str(len(PART1)), str(len(PART2)), "4"]

    resp = _complete(s3_request, bucket, key, upload_id, [(n, etags[n], "") for n in (1, 2, 3)])
    assert resp.status_code == 200, resp.data
    result = parse_xml(resp.data)
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in (PART1, PART2, PART3))).hexdigest()
    assert result.findtext("ETag") == f'"{expected}-3"'
    assert result.findtext("Key") == key
    assert result.findtext("Location").endswith(f"/s3/{bucket}/{quote(key)}")

    got = s3_request("GET", key_path(bucket, key))
    assert got.data == PART1 + PART2 + PART3
    assert got.headers["ETag"] == f'"{expected}-3"'
    assert got.headers["Content-Type"] == "application/x-tar"
    assert got.headers["x-amz-meta-job"] == "7"
    part2 = s3_request("GET", key_path(bucket, key) + "?partNumber=2")
    assert part2.status_code == 206
    assert part2.data == PART2
    assert part2.headers["x-amz-mp-parts-count"] == "3"
    # The upload is gone, and so are its part files.
    resp = s3_request("GET", key_path(bucket, key) + f"?uploadId={quote(upload_id)}")
    assert resp.status_code == 404
    assert error_code(resp) == "NoSuchUpload"
    assert not list((settings.objects_dir / bucket / "uploads").iterdir())


def test_parts_too_small(s3_request, bucket):
    upload_id = _create(s3_request, bucket, "small")
    e1 = _part(s3_request, bucket, "small", upload_id, 1, b"a" * 100)
    e2 = _part(s3_request, bucket, "small", upload_id, 2, b"b" * 100)
    resp = _complete(s3_request, bucket, "small", upload_id, [(1, e1, ""), (2, e2, "")])
    assert resp.status_code == 400
    assert error_code(resp) == "EntityTooSmall"
    # A single small part is fine (the last part may be small).
    resp = _complete(s3_request, bucket, "small", upload_id, [(1, e1, "")])
    assert resp.status_code == 200
    assert s3_request("GET", key_path(bucket, "small")).data == b"a" * 100


def test_invalid_part_and_order(s3_request, bucket):
    upload_id = _create(s3_request, bucket, "k")
    e1 = _part(s3_request, bucket, "k", upload_id, 1, PART1)
    e2 = _part(s3_request, bucket, "k", upload_id, 2, PART3)
    resp = _complete(s3_request, bucket, "k", upload_id, [(2, e2, ""), (1, e1, "")])
    assert resp.status_code == 400
    assert error_code(resp) == "InvalidPartOrder"
    resp = _complete(s3_request, bucket, "k", upload_id, [(1, e1, ""), (2, '"0123"', "")])
    assert error_code(resp) == "InvalidPart"
    resp = _complete(s3_request, bucket, "k", upload_id, [(1, e1, ""), (3, e2, "")])
    assert error_code(resp) == "InvalidPart"
    resp = s3_request("POST", key_path(bucket, "k") + f"?uploadId={quote(upload_id)}", body=b"<Complete")
    assert error_code(resp) == "MalformedXML"
    resp = s3_request(
        "POST",
        key_path(bucket, "k") + f"?uploadId={quote(upload_id)}",
        body=b"<CompleteMultipartUpload></CompleteMultipartUpload>",
    )
    assert error_code(resp) == "MalformedXML"
    # Still completable after all of that.
    resp = _complete(s3_request, bucket, "k", upload_id, [(1, e1.strip('"'), ""), (2, e2, "")])
    assert resp.status_code == 200


def test_bad_part_numbers_and_upload_ids(s3_request, bucket):
    upload_id = _create(s3_request, bucket, "k")
    for number in ["0", "10001", "x"]:
        resp = s3_request("PUT", key_path(bucket, "k") + f"?partNumber={number}&uploadId={upload_id}", body=b"x")
        assert resp.status_code == 400
        assert error_code(resp) == "InvalidArgument"
    for bad in ["nope", "../../etc", upload_id + "x"]:
        resp = s3_request("PUT", key_path(bucket, "k") + f"?partNumber=1&uploadId={quote(bad, safe='')}", body=b"x")
        assert resp.status_code == 404
        assert error_code(resp) == "NoSuchUpload"
    # An upload id belongs to its key.
    resp = s3_request("PUT", key_path(bucket, "other") + f"?partNumber=1&uploadId={upload_id}", body=b"x")
    assert error_code(resp) == "NoSuchUpload"


def test_abort_and_list_uploads(s3_request, bucket):
    first = _create(s3_request, bucket, "dir/a")
    second = _create(s3_request, bucket, "dir/b")
    _create(s3_request, bucket, "other")
    _part(s3_request, bucket, "dir/a", first, 1, b"x")
    root = parse_xml(s3_request("GET", f"/{bucket}?uploads&prefix=dir%2F").data)
    assert root.tag == "ListMultipartUploadsResult"
    assert [(u.findtext("Key"), u.findtext("UploadId")) for u in root.findall("Upload")] == [
        ("dir/a", first),
        ("dir/b", second),
    ]
    root = parse_xml(s3_request("GET", f"/{bucket}?uploads&delimiter=%2F").data)
    assert [p.findtext("Prefix") for p in root.findall("CommonPrefixes")] == ["dir/"]
    assert [u.findtext("Key") for u in root.findall("Upload")] == ["other"]
    root = parse_xml(s3_request("GET", f"/{bucket}?uploads&max-uploads=1").data)
    assert root.findtext("IsTruncated") == "true"
    assert root.findtext("NextKeyMarker") == "dir/a"

    assert s3_request("DELETE", key_path(bucket, "dir/a") + f"?uploadId={first}").status_code == 204
    resp = s3_request("DELETE", key_path(bucket, "dir/a") + f"?uploadId={first}")
    assert resp.status_code == 404
    assert error_code(resp) == "NoSuchUpload"
    resp = s3_request("PUT", key_path(bucket, "dir/a") + f"?partNumber=2&uploadId={first}", body=b"x")
    assert error_code(resp) == "NoSuchUpload"
    keys = [u.findtext("Key") for u in parse_xml(s3_request("GET", f"/{bucket}?uploads").data).findall("Upload")]
    assert keys == ["dir/b", "other"]


def test_reuploading_a_part_replaces_it(s3_request, bucket, settings):
    upload_id = _create(s3_request, bucket, "k")
    _part(s3_request, bucket, "k", upload_id, 1, b"old")
    etag = _part(s3_request, bucket, "k", upload_id, 1, b"new")
    assert len(list((settings.objects_dir / bucket / "uploads" / upload_id).glob("blob-*"))) == 1
    assert _complete(s3_request, bucket, "k", upload_id, [(1, etag, "")]).status_code == 200
    assert s3_request("GET", key_path(bucket, "k")).data == b"new"


def test_checksummed_multipart_upload(s3_request, bucket):
    upload_id = _create(s3_request, bucket, "c", **{"x-amz-checksum-algorithm": "CRC32"})
    e1 = _part(
        s3_request,
        bucket,
        "c",
        upload_id,
        1,
        PART1,
        **{"x-amz-checksum-crc32": _crc32(PART1), "x-amz-sdk-checksum-algorithm": "CRC32"},
    )
    resp = s3_request(
        "PUT",
        key_path(bucket, "c") + f"?partNumber=2&uploadId={upload_id}",
        body=PART3,
        headers={"x-amz-checksum-crc32": _crc32(b"other")},
    )
    assert resp.status_code == 400
    assert error_code(resp) == "BadDigest"
    e2 = _part(s3_request, bucket, "c", upload_id, 2, PART3, **{"x-amz-checksum-crc32": _crc32(PART3)})
    resp = _complete(
        s3_request,
        bucket,
        "c",
        upload_id,
        [
            (1, e1, f"<ChecksumCRC32>{_crc32(PART1)}</ChecksumCRC32>"),
            (2, e2, f"<ChecksumCRC32>{_crc32(PART3)}</ChecksumCRC32>"),
        ],
    )
    assert resp.status_code == 200, resp.data
    assert parse_xml(resp.data).findtext("ChecksumCRC32").endswith("-2")
    # A mismatching part checksum in the completion list is an InvalidPart.
    upload_id = _create(s3_request, bucket, "d", **{"x-amz-checksum-algorithm": "CRC32"})
    e1 = _part(s3_request, bucket, "d", upload_id, 1, PART3, **{"x-amz-checksum-crc32": _crc32(PART3)})
    resp = _complete(s3_request, bucket, "d", upload_id, [(1, e1, f"<ChecksumCRC32>{_crc32(b'x')}</ChecksumCRC32>")])
    assert error_code(resp) == "InvalidPart"


def test_upload_part_copy(s3_request, bucket):
    source = PART1 + PART3
    assert s3_request("PUT", key_path(bucket, "src"), body=source).status_code == 200
    upload_id = _create(s3_request, bucket, "dst")
    path = key_path(bucket, "dst")
    resp = s3_request(
        "PUT",
        path + f"?partNumber=1&uploadId={upload_id}",
        headers={
            "x-amz-copy-source": f"{bucket}/src",
            "x-amz-copy-source-range": f"bytes=0-{len(PART1) - 1}",
        },
    )
    assert resp.status_code == 200, resp.data
    e1 = parse_xml(resp.data).findtext("ETag")
    assert e1 == f'"{hashlib.md5(PART1).hexdigest()}"'
    resp = s3_request(
        "PUT",
        path + f"?partNumber=2&uploadId={upload_id}",
        headers={
            "x-amz-copy-source": f"{bucket}/src",
            "x-amz-copy-source-range": f"bytes={len(PART1)}-{len(source)}",
        },
    )
    assert (resp.status_code, error_code(resp)) == (416, "InvalidRange")  # past the source's end
    resp = s3_request(
        "PUT",
        path + f"?partNumber=2&uploadId={upload_id}",
        headers={"x-amz-copy-source": f"{bucket}/src", "x-amz-copy-source-range": "bytes=9-3"},
    )
    assert error_code(resp) == "InvalidArgument"
    resp = s3_request(
        "PUT",
        path + f"?partNumber=2&uploadId={upload_id}",
        headers={
            "x-amz-copy-source": f"{bucket}/src",
            "x-amz-copy-source-range": f"bytes={len(PART1)}-{len(source) - 1}",
        },
    )
    e2 = parse_xml(resp.data).findtext("ETag")
    assert _complete(s3_request, bucket, "dst", upload_id, [(1, e1, ""), (2, e2, "")]).status_code == 200
    assert s3_request("GET", path).data == source
