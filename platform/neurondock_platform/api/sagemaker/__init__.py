"""The SageMaker control plane over awsJson1.1: ``POST /`` with ``X-Amz-Target: SageMaker.<Op>``."""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Blueprint, Response, request

from neurondock_platform.api import context
from neurondock_platform.api.sagemaker.registry import OPERATIONS
from neurondock_platform.errors import SerializationException, UnknownOperationException

# Importing the operation modules registers their handlers.
from neurondock_platform.api.sagemaker import (  # noqa: F401  isort: skip
    operations,
)

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "SageMaker."

bp = Blueprint("sagemaker", __name__)


def json_response(payload: dict[str, Any], status: int = 200) -> Response:
    """Render an awsJson1.1 response with a request id botocore copies into ResponseMetadata."""
    return Response(
        json.dumps(payload, default=str),
        status=status,
        content_type=CONTENT_TYPE,
        headers={"x-amzn-RequestId": str(uuid.uuid4())},
    )


def dispatch_target(target: str) -> Response:
    """Run the operation named by ``X-Amz-Target`` on the request body."""
    if not target.startswith(TARGET_PREFIX):
        raise UnknownOperationException(f"Unknown operation {target!r}: neurondock serves SageMaker.<Operation>.")
    name = target[len(TARGET_PREFIX) :]
    handler = OPERATIONS.get(name)
    if handler is None:
        raise UnknownOperationException(
            f"Operation SageMaker.{name} is not supported by neurondock. Supported: {', '.join(sorted(OPERATIONS))}."
        )
    raw = request.get_data(cache=True)
    try:
        params = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise SerializationException(f"Request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise SerializationException("Request body is nested too deeply to be a SageMaker request.") from exc
    if not isinstance(params, dict):
        raise SerializationException("Request body must be a JSON object.")
    session = context.db()
    result = handler(params)
    session.commit()
    return json_response(result)
