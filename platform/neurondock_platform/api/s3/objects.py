"""Object operations: Put/Get/Head/Delete/CopyObject and DeleteObjects."""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from collections.abc import Iterator
from typing import IO
from urllib.parse import unquote

from flask import Response, request

from neurondock_platform.api import context
from neurondock_platform.api.auth import CredentialCache
from neurondock_platform.api.s3 import xmlio
from neurondock_platform.api.s3.common import (
    META_PREFIX,
    base_headers,
    empty_response,
    http_date,
    iso8601,
    object_meta_from_request,
    store,
    xml_response,
)
from neurondock_platform.api.s3.payload import open_payload, read_small_body
from neurondock_platform.models import Bucket
from neurondock_platform.services import objects as svc

STREAM_CHUNK = 256 * 1024
MAX_DELETE_KEYS = 1000
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")
# GetObject's response-* query parameters override these headers.
_RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def checksum_headers(checksums: dict[str, str], algorithms: list[str]) -> dict[str, str]:
    """Return ``x-amz-checksum-*`` headers for the given algorithms."""
    headers = {f"x-amz-checksum-{a.lower()}": checksums[a] for a in algorithms if a in checksums}
    if headers:
        composite = any("-" in v for v in headers.values())
        headers["x-amz-checksum-type"] = "COMPOSITE" if composite else "FULL_OBJECT"
    return headers


def put_object(credentials: CredentialCache, bucket: Bucket, key: str) -> Response:
    """PutObject: stream the body to a new blob, verify it, then commit."""
    meta = object_meta_from_request()
    svc.check_metadata(meta.metadata)
    payload = open_payload(credentials, limit=svc.MAX_PUT_SIZE)
    st = store()
    keep = ["CRC32", *payload.requested_algorithms]
    with st.new_blob(bucket.name, payload.algorithms("CRC32")) as blob:
        payload.receive(blob)
        computed = blob.digests.checksums()
        info = st.commit_object(
            bucket.name, key, blob, meta, checksums={a: v for a, v in computed.items() if a in keep}
        )
    headers = {
        "ETag": info.quoted_etag,
        **checksum_headers(dict(info.checksums), payload.requested_algorithms),
    }
    return empty_response(200, headers)


def _parse_http_date(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip().removeprefix("W/").strip('"') for c in header.split(",")]
    return "*" in candidates or etag in candidates


def check_conditions(info: svc.ObjectInfo, prefix: str = "", *, copy: bool = False) -> bool:
    """Evaluate If-* headers; return False for 304 Not Modified, raise 412 when a precondition fails."""
    headers = request.headers
    last_modified = info.last_modified.replace(microsecond=0)
    if_match = headers.get(f"{prefix}If-Match")
    if_none_match = headers.get(f"{prefix}If-None-Match")
    if if_match is not None and not _etag_matches(if_match, info.etag):
        raise svc.PreconditionFailed(condition=f"{prefix}If-Match")
    unmodified = _parse_http_date(headers.get(f"{prefix}If-Unmodified-Since"))
    if if_match is None and unmodified is not None and last_modified > unmodified:
        raise svc.PreconditionFailed(condition=f"{prefix}If-Unmodified-Since")
    if if_none_match is not None and _etag_matches(if_none_match, info.etag):
        if copy:
            raise svc.PreconditionFailed(condition=f"{prefix}If-None-Match")
        return False
    modified = _parse_http_date(headers.get(f"{prefix}If-Modified-Since"))
    if if_none_match is None and modified is not None and last_modified <= modified:
        if copy:
            raise svc.PreconditionFailed(condition=f"{prefix}If-Modified-Since")
        return False
    return True


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return the inclusive byte range asked for, None to send everything, or raise InvalidRange."""
    if not header:
        return None
    m = _RANGE_RE.fullmatch(header.strip())
    if m is None or (not m[1] and not m[2]):
        return None  # not a single byte range: S3 (like RFC 9110) ignores it
    if not m[1]:
        suffix = int(m[2])
        if suffix == 0 or size == 0:
            raise svc.InvalidRange(range=header, size=size)
        return max(0, size - suffix), size - 1
    start = int(m[1])
    if m[2] and int(m[2]) < start:
        return None
    if start >= size:
        raise svc.InvalidRange(range=header, size=size)
    end = int(m[2]) if m[2] else size - 1
    return start, min(end, size - 1)


def _part_range(info: svc.ObjectInfo, raw: str) -> tuple[int, int]:
    try:
        number = int(raw)
    except ValueError as exc:
        raise svc.InvalidArgument(
            "Part number must be an integer between 1 and 10000, inclusive", name="partNumber", value=raw
        ) from exc
    sizes = info.part_sizes or (info.size,)
    if not 1 <= number <= len(sizes):
        raise svc.InvalidRange(range=f"partNumber={raw}", size=info.size)
    start = sum(sizes[: number - 1])
    return start, start + sizes[number - 1] - 1


def object_headers(info: svc.ObjectInfo) -> dict[str, str]:
    """Return the headers GET and HEAD send for an object."""
    headers = {
        "ETag": info.quoted_etag,
        "Last-Modified": http_date(info.last_modified),
        "Content-Type": info.content_type,
        "Accept-Ranges": "bytes",
        **info.meta.headers,
    }
    for name, value in info.metadata.items():
        headers[META_PREFIX + name] = value
    return headers


def _stream(f: IO[bytes], start: int, length: int) -> Iterator[bytes]:
    try:
        f.seek(start)
        remaining = length
        while remaining > 0:
            data = f.read(min(STREAM_CHUNK, remaining))
            if not data:
                break
            remaining -= len(data)
            yield data
    finally:
        f.close()


def get_object(bucket: Bucket, key: str, *, head: bool) -> Response:
    """GetObject / HeadObject, with Range, partNumber, If-* and response-* overrides."""
    info, f = store().open_object(bucket.name, key)
    try:
        headers = object_headers(info)
        if not check_conditions(info):
            f.close()
            return empty_response(304, {"ETag": headers["ETag"], "Last-Modified": headers["Last-Modified"]})
        part_number = request.args.get("partNumber")
        byte_range = (
            _part_range(info, part_number)
            if part_number is not None
            else parse_range(request.headers.get("Range"), info.size)
        )
        status = 200
        start, length = 0, info.size
        if byte_range is not None:
            status = 206
            start, end = byte_range
            length = end - start + 1
            headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
        if part_number is not None:
            headers["x-amz-mp-parts-count"] = str(info.parts_count or 1)
        elif byte_range is None and request.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
            # Checksums cover the whole object only, so ranged reads carry none (as in S3).
            headers.update(checksum_headers(dict(info.checksums), list(info.checksums)))
        for arg, header in _RESPONSE_OVERRIDES.items():
            if arg in request.args:
                headers[header] = request.args[arg]
    except BaseException:
        f.close()
        raise
    if head:
        f.close()
        resp = empty_response(status, headers)
        resp.headers["Content-Length"] = str(length)
        return resp
    resp = Response(_stream(f, start, length), status=status, direct_passthrough=True)
    resp.call_on_close(f.close)
    resp.headers.update(base_headers())
    resp.headers.update(headers)
    resp.headers["Content-Length"] = str(length)
    return resp


def delete_object(bucket: Bucket, key: str) -> Response:
    """DeleteObject: 204 whether or not the key existed."""
    store().delete_object(bucket.name, key)
    return empty_response(204)


def delete_objects(credentials: CredentialCache, bucket: Bucket) -> Response:
    """DeleteObjects (``POST ?delete``), as ``aws s3 rm --recursive`` sends it."""
    if "Content-MD5" not in request.headers and not any(
        h.lower().startswith("x-amz-checksum-") or h.lower() == "x-amz-trailer" for h, _ in request.headers
    ):
        raise svc.InvalidRequest("Missing required header for this request: Content-MD5")
    document = xmlio.parse(read_small_body(credentials), "Delete")
    quiet = (xmlio.text(document, "Quiet") or "").strip().lower() == "true"
    entries = document.findall("Object")
    if not entries or len(entries) > MAX_DELETE_KEYS:
        raise svc.MalformedXML()
    st = store()
    root = xmlio.root("DeleteResult")
    for entry in entries:
        key = xmlio.text(entry, "Key")
        if key is None:
            raise svc.MalformedXML()
        try:
            svc.validate_key(key)
            st.delete_object(bucket.name, key)
        except svc.S3Error as err:
            node = xmlio.sub(root, "Error")
            xmlio.sub(node, "Key", key)
            xmlio.sub(node, "Code", err.code)
            xmlio.sub(node, "Message", err.message)
            continue
        if not quiet:
            xmlio.sub(xmlio.sub(root, "Deleted"), "Key", key)
    return xml_response(root)


def parse_copy_source(value: str) -> tuple[str, str]:
    """Split ``x-amz-copy-source`` (``/bucket/key?versionId=…``, URL-encoded) into bucket and key."""
    raw, _, query = value.partition("?")
    if query and query not in ("versionId=null", "versionId="):
        raise svc.InvalidArgument("Invalid version id specified", name="x-amz-copy-source", value=value)
    bucket, _, key = unquote(raw).lstrip("/").partition("/")
    if not bucket or not key:
        raise svc.InvalidArgument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            name="x-amz-copy-source",
            value=value,
        )
    return bucket, key


def copy_source() -> tuple[svc.ObjectInfo, IO[bytes]]:
    """Open the caller's copy source object, checking x-amz-copy-source-if-* conditions."""
    src_bucket, src_key = parse_copy_source(request.headers["x-amz-copy-source"])
    svc.validate_key(src_key)
    svc.owned_bucket(context.db(), src_bucket, context.auth().account_id)
    info, f = store().open_object(src_bucket, src_key)
    try:
        check_conditions(info, "x-amz-copy-source-", copy=True)
    except BaseException:
        f.close()
        raise
    return info, f


def copy_object(bucket: Bucket, key: str) -> Response:
    """CopyObject (``aws s3 cp s3://… s3://…``): COPY or REPLACE metadata."""
    directive = request.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise svc.InvalidArgument(
            "Unknown metadata directive.", name="x-amz-metadata-directive", value=directive
        )
    info, f = copy_source()
    with f:
        if info.bucket == bucket.name and info.key == key and directive == "COPY":
            raise svc.InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself without "
                "changing the object's metadata, storage class, website redirect location or encryption "
                "attributes."
            )
        meta = object_meta_from_request() if directive == "REPLACE" else info.meta
        st = store()
        with st.new_blob(bucket.name, ["MD5", "CRC32"]) as blob:
            blob.write_from(f)
            new = st.commit_object(bucket.name, key, blob, meta)
    root = xmlio.root("CopyObjectResult")
    xmlio.sub(root, "LastModified", iso8601(new.last_modified))
    xmlio.sub(root, "ETag", new.quoted_etag)
    return xml_response(root)
