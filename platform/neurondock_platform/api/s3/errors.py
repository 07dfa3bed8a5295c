"""Render every error raised under ``/s3`` as S3's ``<Error>`` XML (bodiless for HEAD)."""

from __future__ import annotations

import datetime as dt
import logging

from flask import Response, g, request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from neurondock_platform.api.s3 import xmlio
from neurondock_platform.api.s3.common import XML_CONTENT_TYPE, base_headers, empty_response
from neurondock_platform.errors import (
    AuthError,
    InvalidSignatureException,
    PlatformError,
    SignatureExpiredException,
    UnrecognizedClientException,
)
from neurondock_platform.services.objects import IncompleteBody, S3Error

log = logging.getLogger(__name__)

# S3's own wording for the codes the SigV4 verifier's errors map to.
_AUTH_MESSAGES = {
    "AccessDenied": "Access Denied",
    "InvalidAccessKeyId": "The AWS Access Key Id you provided does not exist in our records.",
    "SignatureDoesNotMatch": (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method."
    ),
    "RequestTimeTooSkewed": "The difference between the request time and the current time is too large.",
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
        return err.http_status, err.code, err.message, err.details()
    if isinstance(err, AuthError):
        code = err.s3_code or "AccessDenied"
        message = _AUTH_MESSAGES.get(code, err.message)
        return err.http_status, code, message, _auth_details(err)
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
