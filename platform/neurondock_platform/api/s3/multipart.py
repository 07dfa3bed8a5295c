"""Multipart uploads: Create, UploadPart(Copy), Complete, Abort, ListParts, ListMultipartUploads."""

from __future__ import annotations

import re
from urllib.parse import quote

from flask import Response, g, request

from neurondock_platform.api.s3 import xmlio
from neurondock_platform.api.s3.buckets import encoder, int_arg
from neurondock_platform.api.s3.common import (
    empty_response,
    iso8601,
    object_meta_from_request,
    store,
    write_condition,
    xml_response,
)
from neurondock_platform.api.s3.errors import InvalidRange
from neurondock_platform.api.s3.objects import checksum_headers, copy_source
from neurondock_platform.api.s3.payload import (
    checksum_algorithm_header,
    header_checksums,
    open_payload,
    read_small_body,
)
from neurondock_platform.models import Bucket
from neurondock_platform.services import objects as svc
from neurondock_platform.services.credentials import CredentialCache

_COPY_RANGE_RE = re.compile(r"bytes=(\d+)-(\d+)")


def _upload_id() -> str:
    upload_id = request.args.get("uploadId", "")
    if not upload_id:
        raise svc.InvalidArgument("This operation requires an uploadId.", name="uploadId", value="")
    return upload_id


def _part_number() -> int:
    raw = request.args.get("partNumber", "")
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if not 1 <= number <= svc.MAX_PART_NUMBER:
        raise svc.InvalidArgument(
            "Part number must be an integer between 1 and 10000, inclusive", name="partNumber", value=raw
        )
    return number


def _people(parent: xmlio.ET.Element, account_id: str) -> None:
    for tag in ("Initiator", "Owner"):
        node = xmlio.sub(parent, tag)
        xmlio.sub(node, "ID", account_id)
        xmlio.sub(node, "DisplayName", account_id)


def create_multipart_upload(bucket: Bucket, key: str) -> Response:
    """CreateMultipartUpload (``POST ?uploads``), with the object's checksum algorithm and type."""
    algorithm = checksum_algorithm_header("x-amz-checksum-algorithm")
    requested_type = request.headers.get("x-amz-checksum-type")
    upload = store().create_multipart_upload(
        bucket.name,
        key,
        object_meta_from_request(),
        checksum_algorithm=algorithm,
        checksum_type=requested_type.strip().upper() if requested_type is not None else None,
    )
    root = xmlio.root("InitiateMultipartUploadResult")
    xmlio.sub(root, "Bucket", bucket.name)
    xmlio.sub(root, "Key", key)
    xmlio.sub(root, "UploadId", upload.upload_id)
    headers = {}
    if upload.checksum_algorithm and upload.checksum_type:
        headers = {"x-amz-checksum-algorithm": upload.checksum_algorithm, "x-amz-checksum-type": upload.checksum_type}
    return xml_response(root, headers=headers)


def upload_part(credentials: CredentialCache, bucket: Bucket, key: str) -> Response:
    """UploadPart (``PUT ?partNumber=N&uploadId=…``): returns the part's ETag."""
    number, upload_id = _part_number(), _upload_id()
    st = store()
    upload = st.get_upload(bucket.name, key, upload_id)
    payload = open_payload(credentials, limit=svc.MAX_PUT_SIZE)
    extra = [upload.checksum_algorithm] if upload.checksum_algorithm else []
    with st.new_part_blob(bucket.name, key, upload_id, payload.algorithms(*extra)) as blob:
        payload.receive(blob)
        keep = {*extra, *payload.requested_algorithms}
        checksums = {a: v for a, v in blob.digests.checksums().items() if a in keep}
        part = st.commit_part(bucket.name, key, upload_id, number, blob, checksums=checksums)
    headers = {"ETag": part.quoted_etag, **checksum_headers(checksums, payload.requested_algorithms)}
    headers.pop("x-amz-checksum-type", None)
    return empty_response(200, headers)


def upload_part_copy(bucket: Bucket, key: str) -> Response:
    """UploadPartCopy: a part copied from (a range of) another object."""
    number, upload_id = _part_number(), _upload_id()
    st = store()
    st.get_upload(bucket.name, key, upload_id)
    info, f = copy_source()
    with f:
        start, length = 0, info.size
        range_header = request.headers.get("x-amz-copy-source-range")
        if range_header is not None:
            m = _COPY_RANGE_RE.fullmatch(range_header.strip())
            if m is None or int(m[1]) > int(m[2]):
                raise svc.InvalidArgument(
                    "The x-amz-copy-source-range value must be of the form bytes=first-last where first "
                    "and last are the zero-based offsets of the first and last bytes to copy",
                    name="x-amz-copy-source-range",
                    value=range_header,
                )
            if int(m[2]) >= info.size:
                raise InvalidRange(range=range_header, size=info.size)
            start, length = int(m[1]), int(m[2]) - int(m[1]) + 1
        f.seek(start)
        with st.new_part_blob(bucket.name, key, upload_id) as blob:
            blob.write_from(f, length)
            part = st.commit_part(bucket.name, key, upload_id, number, blob)
    root = xmlio.root("CopyPartResult")
    xmlio.sub(root, "LastModified", iso8601(part.last_modified))
    xmlio.sub(root, "ETag", part.quoted_etag)
    return xml_response(root)


def _completed_parts(document: xmlio.ET.Element) -> list[svc.CompletedPart]:
    parts = []
    for node in document.findall("Part"):
        number_text = xmlio.text(node, "PartNumber")
        etag = xmlio.text(node, "ETag")
        if number_text is None or etag is None or not number_text.strip().isdigit():
            raise svc.MalformedXML()
        checksums = {
            child.tag[len("Checksum") :]: (child.text or "").strip()
            for child in node
            if child.tag.startswith("Checksum") and child.tag[len("Checksum") :] in svc.CHECKSUM_ALGORITHMS
        }
        parts.append(svc.CompletedPart(int(number_text), etag, checksums))
    return parts


def _object_size_header() -> int | None:
    raw = request.headers.get("x-amz-mp-object-size")
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise svc.InvalidArgument("Invalid x-amz-mp-object-size", name="x-amz-mp-object-size", value=raw)
    return int(raw)


def complete_multipart_upload(credentials: CredentialCache, bucket: Bucket, key: str) -> Response:
    """CompleteMultipartUpload: ETag = md5 of the part md5s, then ``-N``.

    Its ``x-amz-checksum-*`` headers are the whole object's checksum (not the XML body's); If-Match /
    If-None-Match decide under the bucket lock; a retry of a completed upload answers the same again.
    """
    upload_id = _upload_id()
    object_checksums = header_checksums(composite=True)
    requested_type = request.headers.get("x-amz-checksum-type")
    document = xmlio.parse(read_small_body(credentials, checksum_headers=False), "CompleteMultipartUpload")
    info = store().complete_multipart_upload(
        bucket.name,
        key,
        upload_id,
        _completed_parts(document),
        condition=write_condition(),
        expected_checksums=object_checksums,
        checksum_type=requested_type.strip().upper() if requested_type is not None else None,
        expected_size=_object_size_header(),
    )
    root = xmlio.root("CompleteMultipartUploadResult")
    base = g.get("s3_base", "/")
    xmlio.sub(root, "Location", f"{request.host_url.rstrip('/')}{base}{bucket.name}/{quote(key)}")
    xmlio.sub(root, "Bucket", bucket.name)
    xmlio.sub(root, "Key", key)
    xmlio.sub(root, "ETag", info.quoted_etag)
    for algorithm, value in info.checksums.items():
        xmlio.sub(root, f"Checksum{algorithm}", value)
    if info.checksum_type:
        xmlio.sub(root, "ChecksumType", info.checksum_type)
    return xml_response(root)


def abort_multipart_upload(bucket: Bucket, key: str) -> Response:
    store().abort_multipart_upload(bucket.name, key, _upload_id())
    return empty_response(204)


def list_parts(bucket: Bucket, key: str) -> Response:
    """ListParts: part-number-marker / max-parts paging."""
    upload_id = _upload_id()
    st = store()
    upload = st.get_upload(bucket.name, key, upload_id)
    marker = int_arg("part-number-marker", 0)
    max_parts = int_arg("max-parts", 1000, high=1000)
    parts = [p for p in st.list_parts(bucket.name, key, upload_id) if p.part_number > marker]
    page, truncated = parts[:max_parts], len(parts) > max_parts
    root = xmlio.root("ListPartsResult")
    xmlio.sub(root, "Bucket", bucket.name)
    xmlio.sub(root, "Key", key)
    xmlio.sub(root, "UploadId", upload_id)
    xmlio.sub(root, "PartNumberMarker", marker)
    xmlio.sub(root, "NextPartNumberMarker", page[-1].part_number if page else marker)
    xmlio.sub(root, "MaxParts", max_parts)
    xmlio.sub(root, "IsTruncated", truncated)
    _people(root, bucket.account_id)
    xmlio.sub(root, "StorageClass", "STANDARD")
    if upload.checksum_algorithm:
        xmlio.sub(root, "ChecksumAlgorithm", upload.checksum_algorithm)
    if upload.checksum_type:
        xmlio.sub(root, "ChecksumType", upload.checksum_type)
    for part in page:
        node = xmlio.sub(root, "Part")
        xmlio.sub(node, "PartNumber", part.part_number)
        xmlio.sub(node, "LastModified", iso8601(part.last_modified))
        xmlio.sub(node, "ETag", part.quoted_etag)
        xmlio.sub(node, "Size", part.size)
        for algorithm, value in part.checksums.items():
            xmlio.sub(node, f"Checksum{algorithm}", value)
    return xml_response(root)


def list_multipart_uploads(bucket: Bucket) -> Response:
    """ListMultipartUploads: prefix, delimiter, key-marker/upload-id-marker, max-uploads."""
    prefix = request.args.get("prefix", "")
    delimiter = request.args.get("delimiter", "")
    key_marker = request.args.get("key-marker", "")
    id_marker = request.args.get("upload-id-marker", "")
    max_uploads = int_arg("max-uploads", 1000, high=1000)
    encoding, encode = encoder()
    uploads = [
        u
        for u in store().list_uploads(bucket.name, prefix=prefix)
        if u.key > key_marker or (u.key == key_marker and id_marker and u.upload_id > id_marker)
    ]
    entries: list[svc.UploadInfo | str] = []
    truncated = False
    for upload in uploads:
        common = None
        if delimiter:
            idx = upload.key.find(delimiter, len(prefix))
            if idx >= 0:
                common = upload.key[: idx + len(delimiter)]
                if common in entries:
                    continue
        if len(entries) >= max_uploads:
            truncated = True
            break
        entries.append(common if common is not None else upload)
    root = xmlio.root("ListMultipartUploadsResult")
    xmlio.sub(root, "Bucket", bucket.name)
    xmlio.sub(root, "KeyMarker", encode(key_marker))
    xmlio.sub(root, "UploadIdMarker", id_marker)
    last = next((e for e in reversed(entries) if isinstance(e, svc.UploadInfo)), None)
    if truncated and last is not None:
        xmlio.sub(root, "NextKeyMarker", encode(last.key))
        xmlio.sub(root, "NextUploadIdMarker", last.upload_id)
    if prefix:
        xmlio.sub(root, "Prefix", encode(prefix))
    if delimiter:
        xmlio.sub(root, "Delimiter", encode(delimiter))
    xmlio.sub(root, "MaxUploads", max_uploads)
    if encoding:
        xmlio.sub(root, "EncodingType", "url")
    xmlio.sub(root, "IsTruncated", truncated)
    for entry in entries:
        if isinstance(entry, str):
            xmlio.sub(xmlio.sub(root, "CommonPrefixes"), "Prefix", encode(entry))
            continue
        node = xmlio.sub(root, "Upload")
        xmlio.sub(node, "Key", encode(entry.key))
        xmlio.sub(node, "UploadId", entry.upload_id)
        _people(node, bucket.account_id)
        xmlio.sub(node, "StorageClass", "STANDARD")
        xmlio.sub(node, "Initiated", iso8601(entry.initiated))
        if entry.checksum_algorithm:
            xmlio.sub(node, "ChecksumAlgorithm", entry.checksum_algorithm)
        if entry.checksum_type:
            xmlio.sub(node, "ChecksumType", entry.checksum_type)
    return xml_response(root)
