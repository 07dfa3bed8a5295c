"""Object operations: Put/Get/Head/Delete/CopyObject and DeleteObjects."""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import IO
from urllib.parse import unquote

from flask import Response, request

from neurondock_platform.api import context
from neurondock_platform.api.s3 import metadata, xmlio
from neurondock_platform.api.s3.common import (
    META_PREFIX,
    base_headers,
    empty_response,
    http_date,
    iso8601,
    object_meta_from_request,
    request_tags,
    store,
    write_condition,
    xml_response,
)
from neurondock_platform.api.s3.errors import InvalidPartNumber, InvalidRange
from neurondock_platform.api.s3.payload import open_payload, read_small_body
from neurondock_platform.models import Bucket
from neurondock_platform.services import objects as svc
from neurondock_platform.services.credentials import CredentialCache
from neurondock_platform.services.objects import InvalidRequest, PreconditionFailed

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
    """PutObject: stream the body to a new blob, verify it, then commit (If-Match / If-None-Match decide
    under the bucket lock whether it may replace what is there)."""
    meta = object_meta_from_request()
    svc.check_metadata(meta.metadata)
    payload = open_payload(credentials, limit=svc.MAX_PUT_SIZE)
    st = store()
    keep = ["CRC32", *payload.requested_algorithms]
    with st.new_blob(bucket.name, payload.algorithms("CRC32")) as blob:
        payload.receive(blob)
        computed = blob.digests.checksums()
        info = st.commit_object(
            bucket.name,
            key,
            blob,
            meta,
            checksums={a: v for a, v in computed.items() if a in keep},
            condition=write_condition(),
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


def check_conditions(info: svc.ObjectInfo, prefix: str = "", *, copy: bool = False) -> bool:
    """Evaluate If-* headers; return False for 304 Not Modified, raise 412 when a precondition fails."""
    headers = request.headers
    last_modified = info.last_modified.replace(microsecond=0)
    if_match = headers.get(f"{prefix}If-Match")
    if_none_match = headers.get(f"{prefix}If-None-Match")
    if if_match is not None and not svc.etag_matches(if_match, info.etag):
        raise PreconditionFailed(condition=f"{prefix}If-Match")
    unmodified = _parse_http_date(headers.get(f"{prefix}If-Unmodified-Since"))
    if if_match is None and unmodified is not None and last_modified > unmodified:
        raise PreconditionFailed(condition=f"{prefix}If-Unmodified-Since")
    if if_none_match is not None and svc.etag_matches(if_none_match, info.etag):
        if copy:
            raise PreconditionFailed(condition=f"{prefix}If-None-Match")
        return False
    modified = _parse_http_date(headers.get(f"{prefix}If-Modified-Since"))
    if if_none_match is None and modified is not None and last_modified <= modified:
        if copy:
            raise PreconditionFailed(condition=f"{prefix}If-Modified-Since")
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
            raise InvalidRange(range=header, size=size)
        return max(0, size - suffix), size - 1
    start = int(m[1])
    if m[2] and int(m[2]) < start:
        return None
    if start >= size:
        raise InvalidRange(range=header, size=size)
    end = int(m[2]) if m[2] else size - 1
    return start, min(end, size - 1)


def _part_range(info: svc.ObjectInfo, raw: str) -> tuple[int, int]:
    try:
        number = int(raw)
    except ValueError as exc:
        raise svc.InvalidArgument(
            "Part number must be an integer between 1 and 10000, inclusive", name="partNumber", value=raw
        ) from exc
    if not 1 <= number <= svc.MAX_PART_NUMBER:
        raise svc.InvalidArgument(
            "Part number must be an integer between 1 and 10000, inclusive", name="partNumber", value=raw
        )
    sizes = info.part_sizes or (info.size,)
    if number > len(sizes):
        raise InvalidPartNumber(part_number=number, parts_count=len(sizes))
    start = sum(sizes[: number - 1])
    return start, start + sizes[number - 1] - 1


def _part_checksum_headers(info: svc.ObjectInfo, number: int) -> dict[str, str]:
    """A part's own checksums (a whole object is its only part), typed as the object's checksum is."""
    if not info.part_checksums:
        return checksum_headers(dict(info.checksums), list(info.checksums))
    part = info.part_checksums[number - 1]
    headers = {f"x-amz-checksum-{a.lower()}": v for a, v in part.items() if a in info.checksums}
    if headers and info.checksum_type:
        headers["x-amz-checksum-type"] = info.checksum_type
    return headers


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
        headers[META_PREFIX + name] = metadata.encode_value(value)
    if info.meta.tags:
        headers["x-amz-tagging-count"] = str(len(info.meta.tags))
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
        checksum_mode = request.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED"
        if part_number is not None:
            headers["x-amz-mp-parts-count"] = str(info.parts_count or 1)
            if checksum_mode:
                headers.update(_part_checksum_headers(info, int(part_number)))
        elif byte_range is None and checksum_mode:
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


def _delete_condition(if_match: str | None, last_modified: str | None, size: str | None) -> svc.DeleteCondition | None:
    if if_match is None and last_modified is None and size is None:
        return None
    when = None
    if last_modified is not None:
        when = _parse_http_date(last_modified) or _parse_iso8601(last_modified)
        if when is None:
            raise svc.InvalidArgument(
                "Invalid date in x-amz-if-match-last-modified-time",
                name="x-amz-if-match-last-modified-time",
                value=last_modified,
            )
    if size is not None and not size.strip().isdigit():
        raise svc.InvalidArgument("Invalid x-amz-if-match-size", name="x-amz-if-match-size", value=size)
    return svc.DeleteCondition(if_match=if_match, last_modified=when, size=int(size) if size is not None else None)


def _parse_iso8601(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def delete_object(bucket: Bucket, key: str) -> Response:
    """DeleteObject: 204 whether or not the key existed; If-Match and friends are checked under the lock."""
    headers = request.headers
    condition = _delete_condition(
        headers.get("If-Match"), headers.get("x-amz-if-match-last-modified-time"), headers.get("x-amz-if-match-size")
    )
    store().delete_object(bucket.name, key, condition=condition)
    return empty_response(204)


def delete_objects(credentials: CredentialCache, bucket: Bucket) -> Response:
    """DeleteObjects (``POST ?delete``), as ``aws s3 rm --recursive`` sends it."""
    if "Content-MD5" not in request.headers and not any(
        h.lower().startswith("x-amz-checksum-") or h.lower() == "x-amz-trailer" for h, _ in request.headers
    ):
        raise InvalidRequest("Missing required header for this request: Content-MD5")
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
        version_id = xmlio.text(entry, "VersionId")
        try:
            svc.validate_key(key)
            if version_id not in (None, "null"):
                # Unversioned buckets hold only the "null" version of each key.
                raise svc.InvalidArgument("Invalid version id specified", name="versionId", value=version_id)
            condition = _delete_condition(
                xmlio.text(entry, "ETag"), xmlio.text(entry, "LastModifiedTime"), xmlio.text(entry, "Size")
            )
            st.delete_object(bucket.name, key, condition=condition)
        except svc.S3Error as err:
            node = xmlio.sub(root, "Error")
            xmlio.sub(node, "Key", key)
            if version_id is not None:
                xmlio.sub(node, "VersionId", version_id)
            xmlio.sub(node, "Code", err.code)
            xmlio.sub(node, "Message", err.message)
            continue
        if not quiet:
            node = xmlio.sub(root, "Deleted")
            xmlio.sub(node, "Key", key)
            if version_id is not None:
                xmlio.sub(node, "VersionId", version_id)
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
    source = svc.owned_bucket(context.db(), src_bucket, context.auth().account_id)
    expected_owner = request.headers.get("x-amz-source-expected-bucket-owner")
    if expected_owner is not None and expected_owner != source.account_id:
        raise svc.AccessDenied()
    info, f = store().open_object(src_bucket, src_key)
    try:
        check_conditions(info, "x-amz-copy-source-", copy=True)
    except BaseException:
        f.close()
        raise
    return info, f


def _directive(header: str) -> str:
    value = request.headers.get(header, "COPY").upper()
    if value not in ("COPY", "REPLACE"):
        raise svc.InvalidArgument(f"Unknown {header.removeprefix('x-amz-')} value.", name=header, value=value)
    return value


def copy_object(bucket: Bucket, key: str) -> Response:
    """CopyObject (``aws s3 cp s3://… s3://…``): COPY or REPLACE metadata and, separately, tags."""
    directive = _directive("x-amz-metadata-directive")
    tagging_directive = _directive("x-amz-tagging-directive")
    condition = write_condition()
    info, f = copy_source()
    with f:
        if info.bucket == bucket.name and info.key == key and directive == "COPY":
            raise InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself without "
                "changing the object's metadata, storage class, website redirect location or encryption "
                "attributes."
            )
        meta = object_meta_from_request() if directive == "REPLACE" else info.meta
        tags = request_tags() if tagging_directive == "REPLACE" else info.meta.tags
        st = store()
        with st.new_blob(bucket.name, ["MD5", "CRC32"]) as blob:
            blob.write_from(f)
            new = st.commit_object(bucket.name, key, blob, replace(meta, tags=tags), condition=condition)
    root = xmlio.root("CopyObjectResult")
    xmlio.sub(root, "LastModified", iso8601(new.last_modified))
    xmlio.sub(root, "ETag", new.quoted_etag)
    return xml_response(root)
