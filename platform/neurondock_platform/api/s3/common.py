"""Request plumbing shared by the S3 handlers: the store, ids, dates, headers, responses."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from urllib.parse import parse_qsl

from flask import Response, g, request

from neurondock_platform.api import context
from neurondock_platform.api.s3 import metadata, xmlio
from neurondock_platform.services import objects as svc
from neurondock_platform.services.objects import STORED_HEADERS, ObjectMeta, ObjectStore

XML_CONTENT_TYPE = "application/xml"
META_PREFIX = "x-amz-meta-"
TAGGING_HEADER = "x-amz-tagging"


def parse_tagging_header(value: str) -> svc.Tags:
    """Parse ``x-amz-tagging`` (URL query form, ``k1=v1&k2``) into a validated tag set."""
    try:
        pairs: list[tuple[str, str]] | None = parse_qsl(value, keep_blank_values=True, errors="strict")
    except (ValueError, UnicodeDecodeError):
        pairs = None
    if pairs is None or len({k for k, _ in pairs}) != len(pairs):
        raise svc.InvalidArgument(
            "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters "
            "without tag name duplicates.",
            name=TAGGING_HEADER,
            value=value,
        )
    return svc.validate_tags(pairs)


def request_tags() -> svc.Tags:
    """The tags a write asks for in ``x-amz-tagging`` (none when absent)."""
    value = request.headers.get(TAGGING_HEADER)
    return () if value is None else parse_tagging_header(value)


def store() -> ObjectStore:
    """Return the object store of this app (cheap: it only holds its root directory)."""
    return ObjectStore(context.settings().objects_dir)


def request_id() -> str:
    """Return this request's S3 request id, minting it on first use."""
    if "s3_request_id" not in g:
        g.s3_request_id = secrets.token_hex(8).upper()
    value: str = g.s3_request_id
    return value


def host_id() -> str:
    return base64.b64encode(request_id().encode() * 3).decode("ascii")


def iso8601(when: dt.datetime) -> str:
    """Format a timestamp the way S3's XML does (millisecond precision, ``Z``)."""
    when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def http_date(when: dt.datetime) -> str:
    """Format a timestamp for ``Last-Modified`` (RFC 7231)."""
    return when.astimezone(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def base_headers() -> dict[str, str]:
    return {"x-amz-request-id": request_id(), "x-amz-id-2": host_id(), "Server": "neurondock"}


def empty_response(status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """Return a bodiless response with S3's request-id headers."""
    resp = Response(b"", status=status)
    resp.headers.update(base_headers())
    if headers:
        resp.headers.update(headers)
    # Flask adds a text/html Content-Type to every response; S3 sends none on an empty body.
    if "Content-Type" not in (headers or {}):
        del resp.headers["Content-Type"]
    return resp


def xml_response(element: ET.Element, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """Return a rest-xml response body."""
    resp = Response(xmlio.to_bytes(element), status=status, content_type=XML_CONTENT_TYPE)
    resp.headers.update(base_headers())
    if headers:
        resp.headers.update(headers)
    return resp


def object_meta_from_request() -> ObjectMeta:
    """Collect Content-Type, stored headers and ``x-amz-meta-*`` from the request."""
    user = {
        name.lower()[len(META_PREFIX) :]: metadata.decode_value(value)
        for name, value in request.headers.items()
        if name.lower().startswith(META_PREFIX)
    }
    stored: dict[str, str] = {}
    for name in STORED_HEADERS:
        value = request.headers.get(name)
        if value is None:
            continue
        if name == "Content-Encoding":
            # aws-chunked describes the transfer, not the object (S3 drops it).
            codings = [c.strip() for c in value.split(",") if c.strip() and c.strip() != "aws-chunked"]
            value = ", ".join(codings)
        if value:
            stored[name] = value
    content_type = request.headers.get("Content-Type") or ObjectMeta().content_type
    return ObjectMeta(content_type=content_type, metadata=user, headers=stored, tags=request_tags())


def write_condition() -> svc.WriteCondition | None:
    """If-Match / If-None-Match of a write (PutObject, CopyObject, CompleteMultipartUpload)."""
    if_match = request.headers.get("If-Match")
    if_none_match = request.headers.get("If-None-Match")
    if if_match is None and if_none_match is None:
        return None
    return svc.WriteCondition(if_match=if_match, if_none_match=if_none_match)
