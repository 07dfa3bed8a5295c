"""GetObjectAttributes (``GET ?attributes``): an object's ETag, checksum, parts, storage class and size."""

from __future__ import annotations

from flask import Response, request

from neurondock_platform.api.s3 import xmlio
from neurondock_platform.api.s3.common import http_date, store, xml_response
from neurondock_platform.models import Bucket
from neurondock_platform.services import objects as svc

ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")
MAX_PARTS = 1000


def _header_int(name: str, default: int) -> int:
    raw = request.headers.get(name)
    if raw is None or raw.strip() == "":
        return default
    if not raw.strip().isdigit():
        raise svc.InvalidArgument(f"Invalid {name}", name=name, value=raw)
    return int(raw)


def get_object_attributes(bucket: Bucket, key: str) -> Response:
    """Answer the attributes named in ``x-amz-object-attributes`` (at least one is required)."""
    wanted = {a.strip() for a in request.headers.get("x-amz-object-attributes", "").split(",") if a.strip()}
    unknown = wanted - set(ATTRIBUTES)
    if not wanted or unknown:
        raise svc.InvalidArgument(
            "Invalid attribute name specified.",
            name="x-amz-object-attributes",
            value=request.headers.get("x-amz-object-attributes", ""),
        )
    info = store().head_object(bucket.name, key)
    root = xmlio.root("GetObjectAttributesResponse")
    if "ETag" in wanted:
        xmlio.sub(root, "ETag", info.etag)
    if "Checksum" in wanted and info.checksums:
        node = xmlio.sub(root, "Checksum")
        for algorithm, value in info.checksums.items():
            xmlio.sub(node, f"Checksum{algorithm}", value)
        xmlio.sub(node, "ChecksumType", info.checksum_type)
    if "ObjectParts" in wanted and info.parts_count:
        _object_parts(root, info)
    if "StorageClass" in wanted:
        xmlio.sub(root, "StorageClass", "STANDARD")
    if "ObjectSize" in wanted:
        xmlio.sub(root, "ObjectSize", info.size)
    return xml_response(root, headers={"Last-Modified": http_date(info.last_modified)})


def _object_parts(root: xmlio.ET.Element, info: svc.ObjectInfo) -> None:
    marker = _header_int("x-amz-part-number-marker", 0)
    max_parts = min(_header_int("x-amz-max-parts", MAX_PARTS), MAX_PARTS)
    numbers = [n for n in range(1, len(info.part_sizes) + 1) if n > marker]
    page = numbers[:max_parts]
    node = xmlio.sub(root, "ObjectParts")
    xmlio.sub(node, "PartsCount", info.parts_count)
    xmlio.sub(node, "PartNumberMarker", marker)
    xmlio.sub(node, "NextPartNumberMarker", page[-1] if page else marker)
    xmlio.sub(node, "MaxParts", max_parts)
    xmlio.sub(node, "IsTruncated", len(numbers) > len(page))
    for number in page:
        part = xmlio.sub(node, "Part")
        xmlio.sub(part, "PartNumber", number)
        xmlio.sub(part, "Size", info.part_sizes[number - 1])
        checksums = info.part_checksums[number - 1] if info.part_checksums else {}
        for algorithm, value in checksums.items():
            if algorithm in info.checksums:
                xmlio.sub(part, f"Checksum{algorithm}", value)
