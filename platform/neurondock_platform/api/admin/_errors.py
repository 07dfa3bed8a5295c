"""The admin API's error body, ``{"error": {"code", "message"}}``, and how platform errors map onto it.

The SageMaker protocol reports a missing resource as a 400 ValidationException (botocore's waiters
depend on it); a REST API says 404. Another account's resource is reported exactly like a missing one.
"""

from __future__ import annotations

import json
import logging
from typing import ClassVar

from flask import Response
from werkzeug.exceptions import HTTPException

from neurondock_platform.errors import (
    AlreadyExistsError,
    AuthError,
    ConflictException,
    NotFoundError,
    PlatformError,
    ResourceInUse,
    ResourceNotFound,
)
from neurondock_platform.services import objects

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"


class ApiError(PlatformError):
    """An admin-API error with its REST code and status."""

    code: ClassVar[str] = "BadRequest"
    http_status: ClassVar[int] = 400


class BadRequest(ApiError):
    code = "ValidationError"
    http_status = 400


class NotFound(ApiError):
    code = "NotFound"
    http_status = 404


class Forbidden(ApiError):
    code = "AccessDenied"
    http_status = 403
    fmt = "{message}"


class Unauthenticated(ApiError):
    code = "Unauthenticated"
    http_status = 401


def json_body(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Render a JSON response."""
    return Response(json.dumps(payload, default=str), status=status, content_type=CONTENT_TYPE, headers=headers)


def error_response(code: str, message: str, status: int) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="neurondock"'} if status == 401 else None
    return json_body({"error": {"code": code, "message": message}}, status=status, headers=headers)


def render(err: Exception) -> Response:
    """Return the admin-API response for any exception raised by a view."""
    if isinstance(err, ApiError):
        return error_response(err.code, err.message, err.http_status)
    if isinstance(err, NotFoundError | ResourceNotFound | objects.NoSuchBucket | objects.NoSuchKey):
        return error_response("NotFound", err.message, 404)
    if isinstance(err, objects.AccessDenied):
        # Another account's bucket is as invisible as a missing one.
        return error_response("NotFound", "The specified bucket does not exist", 404)
    if isinstance(err, AlreadyExistsError | ConflictException | ResourceInUse):
        return error_response("Conflict", err.message, 409)
    if isinstance(err, AuthError):
        return error_response("Unauthenticated", err.message, 401)
    if isinstance(err, PlatformError):
        status = err.http_status
        if 400 <= status < 500:
            return error_response("ValidationError" if status == 400 else err.code, err.message, status)
        if status in (501, 502):
            return error_response(err.code, err.message, status)
        log.error("platform error on the admin API: %s", err)
        return error_response("InternalError", err.message, status)
    if isinstance(err, HTTPException):
        status = err.code or 500
        code = (err.name or "Error").replace(" ", "")
        return error_response(code, err.description or err.name or "", status)
    log.exception("unhandled error on the admin API")
    return error_response("InternalError", "An internal error occurred.", 500)
