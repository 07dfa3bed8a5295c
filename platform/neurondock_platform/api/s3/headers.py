"""Which S3 request headers the store honours, which it may safely ignore, and which it refuses.

The lists cover every header botocore's S3 model defines for the operations served here (a unit test
checks that none is missing). A header naming a feature the store does not have answers 501 NotImplemented
naming it, unless its value asks for exactly what the store does anyway (``x-amz-storage-class: STANDARD``);
why each ignored header is harmless is in docs/s3.md.
"""

from __future__ import annotations

from flask import request

from neurondock_platform.api.s3.errors import NotImplementedHeader

# Headers the handlers act on.
IMPLEMENTED = frozenset(
    {
        "cache-control", "content-disposition", "content-encoding", "content-language", "content-length",
        "content-md5", "content-type", "expires", "range",
        "if-match", "if-modified-since", "if-none-match", "if-unmodified-since",
        "x-amz-if-match-last-modified-time", "x-amz-if-match-size",
        "x-amz-checksum-algorithm", "x-amz-checksum-type", "x-amz-checksum-mode", "x-amz-sdk-checksum-algorithm",
        "x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme", "x-amz-checksum-sha1",
        "x-amz-checksum-sha256", "x-amz-checksum-sha512", "x-amz-mp-object-size",
        "x-amz-copy-source", "x-amz-copy-source-range", "x-amz-copy-source-if-match",
        "x-amz-copy-source-if-none-match", "x-amz-copy-source-if-modified-since",
        "x-amz-copy-source-if-unmodified-since", "x-amz-metadata-directive", "x-amz-meta-*",
        "x-amz-tagging", "x-amz-tagging-directive",
        "x-amz-expected-bucket-owner", "x-amz-source-expected-bucket-owner",
        "x-amz-object-attributes", "x-amz-max-parts", "x-amz-part-number-marker",
    }
)  # fmt: skip

# Headers accepted and ignored because they cannot change the outcome here (docs/s3.md says why).
HARMLESS = frozenset(
    {
        "x-amz-request-payer",  # an acknowledgement that the requester pays; nothing is billed here
        "x-amz-bypass-governance-retention",  # no object is ever locked, so there is nothing to bypass
        "x-amz-optional-object-attributes",  # asks for RestoreStatus; no object is ever archived
        "x-amz-object-annotation-directive",  # no object has annotations, so COPY and EXCLUDE copy none
    }
)

# Headers for features the store does not have -> the values (lower case) that ask for what it does anyway.
NOT_IMPLEMENTED: dict[str, frozenset[str]] = {
    "x-amz-acl": frozenset({"private", "bucket-owner-full-control"}),
    "x-amz-grant-full-control": frozenset(),
    "x-amz-grant-read": frozenset(),
    "x-amz-grant-read-acp": frozenset(),
    "x-amz-grant-write": frozenset(),
    "x-amz-grant-write-acp": frozenset(),
    "x-amz-object-ownership": frozenset({"bucketownerenforced"}),
    "x-amz-bucket-namespace": frozenset({"global"}),
    "x-amz-bucket-object-lock-enabled": frozenset({"false"}),
    "x-amz-object-lock-mode": frozenset(),
    "x-amz-object-lock-retain-until-date": frozenset(),
    "x-amz-object-lock-legal-hold": frozenset({"off"}),
    "x-amz-object-lock-event-hold": frozenset(),
    "x-amz-object-lock-event-hold-duration-days": frozenset(),
    "x-amz-object-lock-event-hold-duration-years": frozenset(),
    "x-amz-server-side-encryption": frozenset(),
    "x-amz-server-side-encryption-aws-kms-key-id": frozenset(),
    "x-amz-server-side-encryption-context": frozenset(),
    "x-amz-server-side-encryption-bucket-key-enabled": frozenset({"false"}),
    "x-amz-server-side-encryption-customer-algorithm": frozenset(),
    "x-amz-server-side-encryption-customer-key": frozenset(),
    "x-amz-server-side-encryption-customer-key-md5": frozenset(),
    "x-amz-copy-source-server-side-encryption-customer-algorithm": frozenset(),
    "x-amz-copy-source-server-side-encryption-customer-key": frozenset(),
    "x-amz-copy-source-server-side-encryption-customer-key-md5": frozenset(),
    "x-amz-storage-class": frozenset({"standard"}),
    "x-amz-website-redirect-location": frozenset(),
    "x-amz-write-offset-bytes": frozenset(),
    "x-amz-mfa": frozenset(),
    "x-amz-if-match-initiated-time": frozenset(),
    "x-amz-checksum-md5": frozenset(),
    "x-amz-checksum-xxhash64": frozenset(),
    "x-amz-checksum-xxhash3": frozenset(),
    "x-amz-checksum-xxhash128": frozenset(),
}

# Checksum algorithms botocore knows and the store does not compute: naming one is NotImplemented.
UNIMPLEMENTED_CHECKSUMS = frozenset({"MD5", "XXHASH64", "XXHASH3", "XXHASH128"})


def refuse_unimplemented() -> None:
    """Raise ``NotImplementedHeader`` for the first header asking for a feature the store lacks."""
    for name, value in request.headers.items():
        accepted = NOT_IMPLEMENTED.get(name.lower())
        if accepted is not None and value.strip().lower() not in accepted:
            raise NotImplementedHeader(header=name.lower())
