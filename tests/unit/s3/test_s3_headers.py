"""Every request header botocore's S3 model defines for the operations the store serves is classified:
implemented, harmless to ignore, or refused with NotImplemented (so none is silently dropped)."""

from __future__ import annotations

import botocore.session
import pytest

from neurondock_platform.api.s3 import headers

# The S3 operations the store serves (everything else answers NotImplemented or MethodNotAllowed).
OPERATIONS = [
    "ListBuckets", "CreateBucket", "HeadBucket", "DeleteBucket", "GetBucketLocation", "GetBucketVersioning",
    "ListObjects", "ListObjectsV2", "ListObjectVersions", "PutObject", "GetObject", "HeadObject", "DeleteObject",
    "DeleteObjects", "CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
    "CompleteMultipartUpload", "AbortMultipartUpload", "ListParts", "ListMultipartUploads", "GetObjectTagging",
    "PutObjectTagging", "DeleteObjectTagging", "GetObjectAttributes",
]  # fmt: skip


def _model_headers() -> dict[str, list[str]]:
    model = botocore.session.get_session().get_service_model("s3")
    found: dict[str, list[str]] = {}
    for name in OPERATIONS:
        shape = model.operation_model(name).input_shape
        for member in shape.members.values():
            location = member.serialization.get("location")
            if location == "header":
                found.setdefault(member.serialization["name"].lower(), []).append(name)
            elif location == "headers":  # a prefix: x-amz-meta-*
                found.setdefault(member.serialization["name"].lower() + "*", []).append(name)
    return found


def test_every_model_header_is_classified():
    classified = headers.IMPLEMENTED | headers.HARMLESS | set(headers.NOT_IMPLEMENTED)
    missing = {h: ops for h, ops in _model_headers().items() if h not in classified}
    assert not missing, f"classify these in api/s3/headers.py and docs/s3.md: {missing}"


def test_classes_do_not_overlap():
    refused = set(headers.NOT_IMPLEMENTED)
    assert not headers.IMPLEMENTED & headers.HARMLESS
    assert not headers.IMPLEMENTED & refused
    assert not headers.HARMLESS & refused


@pytest.mark.parametrize("algorithm", sorted(headers.UNIMPLEMENTED_CHECKSUMS))
def test_unimplemented_checksums_are_refused_headers(algorithm):
    assert f"x-amz-checksum-{algorithm.lower()}" in headers.NOT_IMPLEMENTED
