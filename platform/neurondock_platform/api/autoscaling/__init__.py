"""Application Auto Scaling on ``POST /``: awsJson1.1, ``X-Amz-Target: AnyScaleFrontendService.<Op>``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from flask import Response, request

from neurondock_platform import catalog
from neurondock_platform.api import aws_json, context
from neurondock_platform.api.autoscaling.operations import OPERATIONS
from neurondock_platform.errors import PlatformError
from neurondock_platform.services import validation
from neurondock_platform.services.autoscaling.errors import NotImplementedFeature, ValidationException

SERVICE = "application-autoscaling"
TARGET_PREFIX = "AnyScaleFrontendService."
CONTENT_TYPE = "application/x-amz-json-1.1"


def handle(target: str, authenticate: Callable[[], object]) -> Response:
    """Answer one request; errors as ``{"__type": code, "Message": text}``."""
    request_id = str(uuid.uuid4())
    name = target[len(TARGET_PREFIX) :]
    try:
        authenticate()
        handler = OPERATIONS.get(name)
        if handler is None:
            if name in catalog.service_model(SERVICE).operation_names:
                raise NotImplementedFeature(f"Application Auto Scaling {name} is not implemented by neurondock.")
            raise ValidationException(f"Unknown operation {name}.")
        raw = request.get_data(cache=True)
        try:
            params = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValidationException(f"The request body is not a valid JSON object: {exc}") from exc
        if not isinstance(params, dict):
            raise ValidationException("The request body must be a JSON object.")
        validation.validate_input(name, params, service=SERVICE, error=ValidationException)
        result = handler(validation.without_nulls(params))
        context.db().commit()
    except PlatformError as err:
        return Response(
            json.dumps(err.body()),
            status=err.http_status,
            content_type=CONTENT_TYPE,
            headers={"x-amzn-RequestId": request_id},
        )
    return Response(
        aws_json.dumps(result),
        status=200,
        content_type=CONTENT_TYPE,
        headers={"x-amzn-RequestId": request_id},
    )
