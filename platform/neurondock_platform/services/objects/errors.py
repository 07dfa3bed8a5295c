"""The errors the object store and bucket ownership raise, each with its S3 code and HTTP status.

The extra ``<Error>`` elements S3 adds for some codes (``BucketName``, ``Key``, ...) are wire detail:
``api.s3.errors`` maps these errors' keyword arguments to them. Errors only the S3 front raises (bad
signatures, ranges, unimplemented headers) live there too.
"""

from __future__ import annotations

from typing import ClassVar

from neurondock_platform.errors import PlatformError


class S3Error(PlatformError):
    """An error S3 reports with its own code; its keyword arguments fill the message and the XML body."""

    code: ClassVar[str] = "InternalError"
    s3_code: ClassVar[str | None] = "InternalError"
    http_status: ClassVar[int] = 500
    fmt: ClassVar[str] = "We encountered an internal error. Please try again."


class AccessDenied(S3Error):
    code = s3_code = "AccessDenied"
    http_status = 403
    fmt = "Access Denied"


class NoSuchBucket(S3Error):
    code = s3_code = "NoSuchBucket"
    http_status = 404
    fmt = "The specified bucket does not exist"


class NoSuchKey(S3Error):
    code = s3_code = "NoSuchKey"
    http_status = 404
    fmt = "The specified key does not exist."


class NoSuchUpload(S3Error):
    code = s3_code = "NoSuchUpload"
    http_status = 404
    fmt = (
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been "
        "aborted or completed."
    )


class BucketNotEmpty(S3Error):
    code = s3_code = "BucketNotEmpty"
    http_status = 409
    fmt = "The bucket you tried to delete is not empty"


class BucketAlreadyExists(S3Error):
    code = s3_code = "BucketAlreadyExists"
    http_status = 409
    fmt = (
        "The requested bucket name is not available. The bucket namespace is shared by all users of the "
        "system. Please select a different name and try again."
    )


class BucketAlreadyOwnedByYou(S3Error):
    code = s3_code = "BucketAlreadyOwnedByYou"
    http_status = 409
    fmt = "Your previous request to create the named bucket succeeded and you already own it."


class InvalidBucketName(S3Error):
    code = s3_code = "InvalidBucketName"
    http_status = 400
    fmt = "The specified bucket is not valid."


class KeyTooLongError(S3Error):
    code = s3_code = "KeyTooLongError"
    http_status = 400
    fmt = "Your key is too long"


class InvalidArgument(S3Error):
    code = s3_code = "InvalidArgument"
    http_status = 400
    fmt = "{message}"


class InvalidPart(S3Error):
    code = s3_code = "InvalidPart"
    http_status = 400
    fmt = (
        "One or more of the specified parts could not be found.  The part may not have been uploaded, "
        "or the specified entity tag may not match the part's entity tag."
    )


class InvalidPartOrder(S3Error):
    code = s3_code = "InvalidPartOrder"
    http_status = 400
    fmt = "The list of parts was not in ascending order. Parts must be ordered by part number."


class EntityTooSmall(S3Error):
    code = s3_code = "EntityTooSmall"
    http_status = 400
    fmt = "Your proposed upload is smaller than the minimum allowed object size."


class EntityTooLarge(S3Error):
    code = s3_code = "EntityTooLarge"
    http_status = 400
    fmt = "Your proposed upload exceeds the maximum allowed size"


class BadDigest(S3Error):
    code = s3_code = "BadDigest"
    http_status = 400
    fmt = "The {algorithm} you specified did not match the calculated checksum."


class MalformedXML(S3Error):
    code = s3_code = "MalformedXML"
    http_status = 400
    fmt = "The XML you provided was not well-formed or did not validate against our published schema"


class MetadataTooLarge(S3Error):
    code = s3_code = "MetadataTooLarge"
    http_status = 400
    fmt = "Your metadata headers exceed the maximum allowed metadata size"


class InvalidRequest(S3Error):
    code = s3_code = "InvalidRequest"
    http_status = 400
    fmt = "{message}"


class PreconditionFailed(S3Error):
    code = s3_code = "PreconditionFailed"
    http_status = 412
    fmt = "At least one of the pre-conditions you specified did not hold"


class InvalidTag(S3Error):
    code = s3_code = "InvalidTag"
    http_status = 400
    fmt = "{message}"
