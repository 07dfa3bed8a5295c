"""Bucket operations: ListBuckets, Create/Head/DeleteBucket, GetBucketLocation, GetBucketVersioning,
ListObjects(V2) and ListObjectVersions."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from flask import Response, request

from neurondock_platform.api import context
from neurondock_platform.api.s3 import xmlio
from neurondock_platform.api.s3.common import empty_response, iso8601, store, xml_response
from neurondock_platform.api.s3.errors import InvalidLocationConstraint
from neurondock_platform.api.s3.payload import read_small_body
from neurondock_platform.models import Bucket
from neurondock_platform.services import objects as svc
from neurondock_platform.services.credentials import CredentialCache

DEFAULT_REGION = "us-east-1"
MAX_KEYS = 1000
_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}|EU")


def int_arg(name: str, default: int, *, low: int = 0, high: int | None = None) -> int:
    """Parse an integer query argument, capping it at ``high`` like S3 does for max-keys."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise svc.InvalidArgument(
            f"Provided {name} not an integer or within integer range", name=name, value=raw
        ) from exc
    if value < low or value > 2**31 - 1:
        raise svc.InvalidArgument(
            f"Argument {name} must be an integer between {low} and 2147483647", name=name, value=raw
        )
    return min(value, high) if high is not None else value


Encode = Callable[[str], str]


def _quote(value: str) -> str:
    return quote(value, safe="/")


def _identity(value: str) -> str:
    return value


def encoder() -> tuple[str | None, Encode]:
    """Return (encoding-type, encode function) for listings (botocore asks for ``url``)."""
    encoding = request.args.get("encoding-type")
    if encoding is not None and encoding.lower() != "url":
        raise svc.InvalidArgument("Invalid Encoding Method specified in Request", name="encoding-type", value=encoding)
    return encoding, _quote if encoding else _identity


def _encode_token(last: str, is_prefix: bool) -> str:
    return base64.urlsafe_b64encode(json.dumps([last, is_prefix]).encode()).decode("ascii")


def _decode_token(token: str) -> tuple[str, bool]:
    try:
        last, is_prefix = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        if isinstance(last, str) and isinstance(is_prefix, bool):
            return last, is_prefix
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        pass
    raise svc.InvalidArgument("The continuation token provided is incorrect", name="continuation-token", value=token)


def _owner(parent: xmlio.ET.Element, account_id: str) -> None:
    owner = xmlio.sub(parent, "Owner")
    xmlio.sub(owner, "ID", account_id)
    xmlio.sub(owner, "DisplayName", account_id)


def list_buckets() -> Response:
    """ListBuckets: the caller's buckets only."""
    account_id = context.auth().account_id
    prefix = request.args.get("prefix", "")
    region = request.args.get("bucket-region")
    limit = int_arg("max-buckets", 10000, low=1, high=10000)
    buckets = svc.list_buckets(context.db(), account_id, prefix=prefix)
    if region:
        buckets = [b for b in buckets if b.region == region]
    token = request.args.get("continuation-token")
    if token:
        after, _ = _decode_token(token)
        buckets = [b for b in buckets if b.name > after]
    page, more = buckets[:limit], len(buckets) > limit
    root = xmlio.root("ListAllMyBucketsResult")
    _owner(root, account_id)
    container = xmlio.sub(root, "Buckets")
    for bucket in page:
        node = xmlio.sub(container, "Bucket")
        xmlio.sub(node, "Name", bucket.name)
        xmlio.sub(node, "CreationDate", iso8601(bucket.created_at))
        xmlio.sub(node, "BucketRegion", bucket.region)
    if more:
        xmlio.sub(root, "ContinuationToken", _encode_token(page[-1].name, False))
    if prefix:
        xmlio.sub(root, "Prefix", prefix)
    return xml_response(root)


def create_bucket(credentials: CredentialCache, name: str) -> Response:
    """CreateBucket, with an optional ``CreateBucketConfiguration`` body."""
    body = read_small_body(credentials, limit=64 * 1024)
    region = DEFAULT_REGION
    if body.strip():
        config = xmlio.parse(body, "CreateBucketConfiguration")
        constraint = xmlio.text(config, "LocationConstraint")
        if constraint:
            if not _REGION_RE.fullmatch(constraint):
                raise InvalidLocationConstraint(location=constraint)
            region = "eu-west-1" if constraint == "EU" else constraint
    session = context.db()
    account_id = context.auth().account_id
    try:
        svc.create_bucket(session, store(), name=name, account_id=account_id, region=region)
    except svc.BucketAlreadyOwnedByYou:
        # S3's legacy behaviour in us-east-1: creating a bucket you already own there succeeds again.
        session.rollback()
        if region != DEFAULT_REGION or svc.owned_bucket(session, name, account_id).region != DEFAULT_REGION:
            raise
        store().create_bucket(name)
    session.commit()
    return empty_response(200, {"Location": f"/{name}"})


def head_bucket(bucket: Bucket) -> Response:
    return empty_response(200, {"x-amz-bucket-region": bucket.region})


def delete_bucket(bucket: Bucket) -> Response:
    session = context.db()
    svc.delete_bucket(session, store(), name=bucket.name, account_id=context.auth().account_id)
    session.commit()
    return empty_response(204)


def get_bucket_location(bucket: Bucket) -> Response:
    root = xmlio.root("LocationConstraint")
    # S3 answers an empty LocationConstraint for us-east-1.
    if bucket.region != DEFAULT_REGION:
        root.text = bucket.region
    return xml_response(root)


def get_bucket_versioning(bucket: Bucket) -> Response:
    """GetBucketVersioning: versioning is never enabled here (an empty configuration, as S3 answers for a
    bucket whose versioning was never set)."""
    return xml_response(xmlio.root("VersioningConfiguration"))


def list_object_versions(bucket: Bucket) -> Response:
    """ListObjectVersions of an unversioned bucket: each object once, as version ``null``, the latest."""
    key_marker = request.args.get("key-marker", "")
    version_marker = request.args.get("version-id-marker", "")
    if version_marker and not key_marker:
        raise svc.InvalidArgument(
            "A version-id marker cannot be specified without a key marker.",
            name="version-id-marker",
            value=version_marker,
        )
    if version_marker not in ("", "null"):
        raise svc.InvalidArgument("Invalid version id specified", name="version-id-marker", value=version_marker)
    listing = _marker_listing(bucket, key_marker)
    page, encode = listing.page, listing.encode
    root = xmlio.root("ListVersionsResult")
    xmlio.sub(root, "Name", bucket.name)
    xmlio.sub(root, "Prefix", encode(listing.prefix))
    xmlio.sub(root, "KeyMarker", encode(key_marker))
    xmlio.sub(root, "VersionIdMarker", version_marker)
    if page.is_truncated and page.last is not None:
        xmlio.sub(root, "NextKeyMarker", encode(page.last))
        if not page.last_is_prefix:
            xmlio.sub(root, "NextVersionIdMarker", "null")
    listing.describe(root)
    for info in page.contents:
        node = xmlio.sub(root, "Version")
        xmlio.sub(node, "Key", encode(info.key))
        xmlio.sub(node, "VersionId", "null")
        xmlio.sub(node, "IsLatest", True)
        xmlio.sub(node, "LastModified", iso8601(info.last_modified))
        xmlio.sub(node, "ETag", info.quoted_etag)
        xmlio.sub(node, "Size", info.size)
        xmlio.sub(node, "StorageClass", "STANDARD")
        _owner(node, bucket.account_id)
        for algorithm in info.checksums:
            xmlio.sub(node, "ChecksumAlgorithm", algorithm)
        if info.checksum_type:
            xmlio.sub(node, "ChecksumType", info.checksum_type)
    listing.common_prefixes(root)
    return xml_response(root)


def _contents(parent: xmlio.ET.Element, info: svc.ObjectInfo, encode: Encode, owner: str | None) -> None:
    node = xmlio.sub(parent, "Contents")
    xmlio.sub(node, "Key", encode(info.key))
    xmlio.sub(node, "LastModified", iso8601(info.last_modified))
    xmlio.sub(node, "ETag", info.quoted_etag)
    for algorithm in info.checksums:
        xmlio.sub(node, "ChecksumAlgorithm", algorithm)
    if info.checksum_type:
        xmlio.sub(node, "ChecksumType", info.checksum_type)
    xmlio.sub(node, "Size", info.size)
    xmlio.sub(node, "StorageClass", "STANDARD")
    if owner is not None:
        _owner(node, owner)


def list_objects_v2(bucket: Bucket) -> Response:
    """ListObjectsV2: prefix, delimiter, max-keys, continuation-token, start-after, encoding-type."""
    prefix = request.args.get("prefix", "")
    delimiter = request.args.get("delimiter", "")
    max_keys = int_arg("max-keys", MAX_KEYS, high=MAX_KEYS)
    start_after = request.args.get("start-after", "")
    token = request.args.get("continuation-token")
    encoding, encode = encoder()
    after, after_is_prefix = _decode_token(token) if token is not None else (start_after, False)
    page = store().list_objects(
        bucket.name,
        prefix=prefix,
        delimiter=delimiter,
        after=after,
        after_is_prefix=after_is_prefix,
        max_keys=max_keys,
    )
    fetch_owner = request.args.get("fetch-owner", "").lower() == "true"
    root = xmlio.root("ListBucketResult")
    xmlio.sub(root, "Name", bucket.name)
    xmlio.sub(root, "Prefix", encode(prefix))
    if delimiter:
        xmlio.sub(root, "Delimiter", encode(delimiter))
    xmlio.sub(root, "MaxKeys", max_keys)
    if encoding:
        xmlio.sub(root, "EncodingType", "url")
    xmlio.sub(root, "KeyCount", len(page.contents) + len(page.common_prefixes))
    xmlio.sub(root, "IsTruncated", page.is_truncated)
    if token is not None:
        xmlio.sub(root, "ContinuationToken", token)
    if page.is_truncated and page.last is not None:
        xmlio.sub(root, "NextContinuationToken", _encode_token(page.last, page.last_is_prefix))
    if start_after:
        xmlio.sub(root, "StartAfter", encode(start_after))
    owner = bucket.account_id if fetch_owner else None
    for info in page.contents:
        _contents(root, info, encode, owner)
    for common in page.common_prefixes:
        xmlio.sub(xmlio.sub(root, "CommonPrefixes"), "Prefix", encode(common))
    return xml_response(root)


@dataclass(frozen=True)
class _Listing:
    """One page listed after a v1-style marker, and the request arguments that shaped it."""

    prefix: str
    delimiter: str
    max_keys: int
    encoding: str | None
    encode: Encode
    page: svc.ListPage

    def describe(self, root: xmlio.ET.Element) -> None:
        """Append MaxKeys, Delimiter, EncodingType and IsTruncated (in S3's order)."""
        xmlio.sub(root, "MaxKeys", self.max_keys)
        if self.delimiter:
            xmlio.sub(root, "Delimiter", self.encode(self.delimiter))
        if self.encoding:
            xmlio.sub(root, "EncodingType", "url")
        xmlio.sub(root, "IsTruncated", self.page.is_truncated)

    def common_prefixes(self, root: xmlio.ET.Element) -> None:
        for common in self.page.common_prefixes:
            xmlio.sub(xmlio.sub(root, "CommonPrefixes"), "Prefix", self.encode(common))


def _marker_listing(bucket: Bucket, marker: str) -> _Listing:
    """List the keys after ``marker`` with the request's prefix, delimiter, max-keys and encoding-type."""
    prefix = request.args.get("prefix", "")
    delimiter = request.args.get("delimiter", "")
    max_keys = int_arg("max-keys", MAX_KEYS, high=MAX_KEYS)
    encoding, encode = encoder()
    # A NextMarker that is a common prefix stands for every key under it.
    marker_is_prefix = bool(delimiter) and marker.endswith(delimiter) and marker.startswith(prefix)
    page = store().list_objects(
        bucket.name,
        prefix=prefix,
        delimiter=delimiter,
        after=marker,
        after_is_prefix=marker_is_prefix,
        max_keys=max_keys,
    )
    return _Listing(prefix, delimiter, max_keys, encoding, encode, page)


def list_objects_v1(bucket: Bucket) -> Response:
    """ListObjects (v1): marker/NextMarker paging."""
    marker = request.args.get("marker", "")
    listing = _marker_listing(bucket, marker)
    page, encode = listing.page, listing.encode
    root = xmlio.root("ListBucketResult")
    xmlio.sub(root, "Name", bucket.name)
    # ListObjects (v1) returns its Prefix unencoded even with encoding-type=url (botocore decodes only
    # Delimiter, Marker, NextMarker and the keys; docs/s3.md).
    xmlio.sub(root, "Prefix", listing.prefix)
    xmlio.sub(root, "Marker", encode(marker))
    if page.is_truncated and page.last is not None:
        xmlio.sub(root, "NextMarker", encode(page.last))
    listing.describe(root)
    for info in page.contents:
        _contents(root, info, encode, bucket.account_id)
    listing.common_prefixes(root)
    return xml_response(root)
