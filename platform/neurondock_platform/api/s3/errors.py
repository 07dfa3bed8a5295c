"""S3's wire errors: the codes only the S3 front raises, the extra ``<Error>`` elements of every S3 code, and
the one handler that renders any error raised under ``/s3`` as S3's ``<Error>`` XML (bodiless for HEAD).

The store's own errors (``services.objects.errors``) carry their code, status and message; which of
their keyword arguments S3 shows as extra elements (``<BucketName>``, ``<Key>``, ...) is decided here.
"""

from __future__ import annotations

import datetime as dt
import logging

from flask import Response, g, request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from neurondock_platform import sigv4
from neurondock_platform.api.s3 import xmlio
from neurondock_platform.api.s3.common import XML_CONTENT_TYPE, base_headers, empty_response
from neurondock_platform.errors import (
    AuthError,
    InvalidSignatureException,
    PlatformError,
    SignatureExpiredException,
    UnrecognizedClientException,
)
from neurondock_platform.services import objects as svc
from neurondock_platform.services.objects import PreconditionFailed, S3Error

log = logging.getLogger(__name__)


class InvalidRange(S3Error):
    code = s3_code = "InvalidRange"
    http_status = 416
    fmt = "The requested range is not satisfiable"


class InvalidPartNumber(S3Error):
    code = s3_code = "InvalidPartNumber"
    http_status = 416
    fmt = "The requested partnumber is not satisfiable"


class InvalidDigest(S3Error):
    code = s3_code = "InvalidDigest"
    http_status = 400
    fmt = "The Content-MD5 you specified is not valid."


class XAmzContentSHA256Mismatch(S3Error):
    code = s3_code = "XAmzContentSHA256Mismatch"
    http_status = 400
    fmt = "The provided 'x-amz-content-sha256' header does not match what was computed."


class IncompleteBody(S3Error):
    code = s3_code = "IncompleteBody"
    http_status = 400
    fmt = "You did not provide the number of bytes specified by the Content-Length HTTP header"


class NotImplementedFeature(S3Error):
    code = s3_code = "NotImplemented"
    http_status = 501
    fmt = "A header or query you provided implies functionality that is not implemented"


class NotImplementedHeader(NotImplementedFeature):
    """A request header naming a feature the store does not have (docs/s3.md lists them)."""

    fmt = "A header you provided implies functionality that is not implemented: {header}"


class InvalidURI(S3Error):
    """A path whose percent-escapes do not spell UTF-8 (docs/s3.md, "Object keys")."""

    code = s3_code = "InvalidURI"
    http_status = 400
    fmt = "Couldn't parse the specified URI."


class MethodNotAllowed(S3Error):
    code = s3_code = "MethodNotAllowed"
    http_status = 405
    fmt = "The specified method is not allowed against this resource."


class SignatureDoesNotMatch(S3Error):
    code = s3_code = "SignatureDoesNotMatch"
    http_status = 403
    fmt = (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method."
    )


class AuthorizationHeaderMalformed(S3Error):
    code = s3_code = "AuthorizationHeaderMalformed"
    http_status = 400
    fmt = "The authorization header is malformed; {reason}"


class InvalidLocationConstraint(S3Error):
    code = s3_code = "InvalidLocationConstraint"
    http_status = 400
    fmt = "The specified location-constraint is not valid"


# For each S3 code with extra ``<Error>`` elements: the error's keyword argument -> the element.
XML_FIELDS: dict[type[S3Error], dict[str, str]] = {
    svc.NoSuchBucket: {"bucket": "BucketName"},
    svc.NoSuchKey: {"key": "Key"},
    svc.NoSuchUpload: {"upload_id": "UploadId"},
    svc.BucketNotEmpty: {"bucket": "BucketName"},
    svc.BucketAlreadyExists: {"bucket": "BucketName"},
    svc.BucketAlreadyOwnedByYou: {"bucket": "BucketName"},
    svc.InvalidBucketName: {"bucket": "BucketName"},
    svc.KeyTooLongError: {"size": "Size", "max_size": "MaxSizeAllowed"},
    svc.InvalidArgument: {"name": "ArgumentName", "value": "ArgumentValue"},
    InvalidRange: {"range": "RangeRequested", "size": "ActualObjectSize"},
    svc.InvalidPart: {"upload_id": "UploadId", "part_number": "PartNumber", "etag": "ETag"},
    svc.InvalidPartOrder: {"upload_id": "UploadId"},
    svc.EntityTooSmall: {"size": "ProposedSize", "min_size": "MinSizeAllowed", "part_number": "PartNumber"},
    svc.EntityTooLarge: {"size": "ProposedSize", "max_size": "MaxSizeAllowed"},
    XAmzContentSHA256Mismatch: {"client": "ClientComputedContentSHA256", "server": "S3ComputedContentSHA256"},
    svc.MetadataTooLarge: {"size": "Size", "max_size": "MaxSizeAllowed"},
    PreconditionFailed: {"condition": "Condition"},
    InvalidPartNumber: {"part_number": "PartNumberRequested", "parts_count": "ActualPartCount"},
    MethodNotAllowed: {"method": "Method", "resource_type": "ResourceType"},
    NotImplementedHeader: {"header": "Header"},
    InvalidLocationConstraint: {"location": "LocationConstraint"},
}


def xml_details(err: S3Error) -> dict[str, str]:
    """Return the extra elements S3 puts in this error's XML body."""
    fields = next((XML_FIELDS[cls] for cls in type(err).__mro__ if cls in XML_FIELDS), {})
    return {element: str(err.kwargs[name]) for name, element in fields.items() if err.kwargs.get(name) is not None}


# S3's own wording for the codes the SigV4 verifier's errors map to.
_AUTH_MESSAGES = {
    "AccessDenied": "Access Denied",
    "InvalidAccessKeyId": "The AWS Access Key Id you provided does not exist in our records.",
    "SignatureDoesNotMatch": SignatureDoesNotMatch.fmt,
    "RequestTimeTooSkewed": "The difference between the request time and the current time is too large.",
    "ExpiredToken": "The provided token has expired.",
    "InvalidToken": "The provided token is malformed or otherwise invalid.",
}
# S3 answers these auth codes with 400 where the other protocols say 403.
_AUTH_STATUS = {
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "ExpiredToken": 400,
    "InvalidToken": 400,
}
_HTTP_CODES = {
    400: "InvalidRequest",
    404: "NoSuchResource",
    405: "MethodNotAllowed",
    411: "MissingContentLength",
    413: "EntityTooLarge",
    501: "NotImplemented",
}


def _auth_details(err: AuthError) -> dict[str, str]:
    details: dict[str, str] = {}
    access_key = _access_key_id()
    if isinstance(err, UnrecognizedClientException | InvalidSignatureException) and access_key:
        details["AWSAccessKeyId"] = access_key
    if isinstance(err, SignatureExpiredException):
        details["RequestTime"] = str(err.kwargs.get("request_time", request.headers.get("x-amz-date", "")))
        details["ServerTime"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        details["MaxAllowedSkewMilliseconds"] = "900000"
    return details


def _access_key_id() -> str:
    auth = request.headers.get("Authorization", "")
    marker = "Credential="
    if marker not in auth:
        return ""
    return auth.split(marker, 1)[1].split("/", 1)[0]


def classify(err: Exception) -> tuple[int, str, str, dict[str, str]]:
    """Return (status, S3 code, message, extra elements) for any exception."""
    if isinstance(err, S3Error):
        return err.http_status, err.code, err.message, xml_details(err)
    if isinstance(err, AuthError):
        code = err.s3_code or "AccessDenied"
        details = _auth_details(err)
        if isinstance(err, sigv4.CredentialScopeError):
            message = f"The authorization header is malformed; {err.kwargs.get('reason', err.message)}"
            if err.kwargs.get("region"):
                details["Region"] = str(err.kwargs["region"])  # botocore retries in the region named here
        elif isinstance(err, sigv4.RequestExpired | sigv4.QueryAuthMalformed):
            message = err.message
        else:
            message = _AUTH_MESSAGES.get(code, err.message)
        return _AUTH_STATUS.get(code, err.http_status), code, message, details
    if isinstance(err, PlatformError) and err.http_status < 500:
        return err.http_status, err.s3_code or err.code, err.message, {}
    if isinstance(err, ClientDisconnected):
        incomplete = IncompleteBody()
        return incomplete.http_status, incomplete.code, incomplete.message, {}
    if isinstance(err, HTTPException) and err.code is not None and err.code < 500:
        code = _HTTP_CODES.get(err.code, err.name.replace(" ", ""))
        return err.code, code, err.description or err.name, {}
    log.exception("unhandled S3 error on %s %s", request.method, request.path)
    return 500, "InternalError", "We encountered an internal error. Please try again.", {}


def render_error(err: Exception) -> Response:
    """Blueprint error handler: S3 errors are XML, never the JSON envelope."""
    status, code, message, details = classify(err)
    if request.method == "HEAD":
        return empty_response(status)
    element = xmlio.root("Error", namespace=False)
    xmlio.sub(element, "Code", code)
    xmlio.sub(element, "Message", message)
    for name, value in details.items():
        xmlio.sub(element, name, value)
    xmlio.sub(element, "Resource", g.get("s3_resource") or request.path)
    headers = base_headers()
    xmlio.sub(element, "RequestId", headers["x-amz-request-id"])
    xmlio.sub(element, "HostId", headers["x-amz-id-2"])
    resp = Response(xmlio.to_bytes(element), status=status, content_type=XML_CONTENT_TYPE)
    resp.headers.update(headers)
    if request.content_length or request.headers.get("Transfer-Encoding"):
        # The body may still be unread on the socket (refused before reading it): a keep-alive
        # connection would parse it as the next request, so close this one instead.
        resp.headers["Connection"] = "close"
    return resp
