"""CloudWatch (signing name ``monitoring``) on ``POST /``, in both protocols its clients speak.

- AWS JSON 1.0: ``X-Amz-Target: GraniteServiceVersion20100801.<Op>``, what botocore ≥ 1.42.7 (boto3
  and the installed AWS CLI v1) sends. Errors carry ``x-amzn-query-error: <Code>;Sender`` so
  botocore raises the modeled exception classes.
- Query: a form body with ``Action`` and ``Version=2010-08-01``, answered in XML, for older SDKs and
  CLIs.

Smithy RPC v2 CBOR (``POST /service/GraniteServiceVersion20100801/operation/<Op>``, other SDKs) is
refused with NotImplemented (docs/cloudwatch.md, "Protocols").
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, request

from neurondock_platform import catalog
from neurondock_platform.api import aws_json, context, query_protocol
from neurondock_platform.api.cloudwatch.operations import OPERATIONS
from neurondock_platform.errors import PlatformError
from neurondock_platform.services import validation
from neurondock_platform.services.cloudwatch.errors import (
    InvalidAction,
    InvalidParameterValue,
    MissingParameter,
    NotImplementedFeature,
    ValidationError,
)

SERVICE = "cloudwatch"
TARGET_PREFIX = "GraniteServiceVersion20100801."
VERSION = "2010-08-01"
XML_NAMESPACE = "http://monitoring.amazonaws.com/doc/2010-08-01/"
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"

bp = Blueprint("cloudwatch", __name__)


def _model() -> Any:
    return catalog.service_model(SERVICE)


def _operation(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    handler = OPERATIONS.get(name)
    if handler is not None:
        return handler
    if name in _model().operation_names:
        raise NotImplementedFeature(f"CloudWatch {name} is not implemented by neurondock.")
    raise InvalidAction(f"The action {name} is not valid for this web service.")


def _run(name: str, params: dict[str, Any]) -> dict[str, Any]:
    handler = _operation(name)
    validation.validate_input(name, params, service=SERVICE, error=ValidationError)
    result = handler(validation.without_nulls(params))
    context.db().commit()
    return result


def handle_json(target: str, authenticate: Callable[[], object]) -> Response:
    """Answer one AWS JSON 1.0 request."""
    request_id = str(uuid.uuid4())
    try:
        authenticate()
        raw = request.get_data(cache=True)
        try:
            params = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidParameterValue(f"The request body is not a valid JSON object: {exc}") from exc
        if not isinstance(params, dict):
            raise InvalidParameterValue("The request body must be a JSON object.")
        result = _run(target[len(TARGET_PREFIX) :], params)
    except PlatformError as err:
        return json_error(err, request_id)
    return Response(
        aws_json.dumps(result),
        status=200,
        content_type=JSON_CONTENT_TYPE,
        headers={"x-amzn-RequestId": request_id},
    )


def json_error(err: PlatformError, request_id: str) -> Response:
    """An error as AWS JSON 1.0 with the Query-compatible code header botocore reads."""
    shape = getattr(err, "shape", err.code)
    sender = "Sender" if getattr(err, "sender", err.http_status < 500) else "Receiver"
    return Response(
        json.dumps({"__type": shape, "message": err.message}),
        status=err.http_status,
        content_type=JSON_CONTENT_TYPE,
        headers={"x-amzn-RequestId": request_id, "x-amzn-query-error": f"{err.code};{sender}"},
    )


def handle_query(authenticate: Callable[[], object]) -> Response:
    """Answer one Query request (form in, XML out)."""
    request_id = str(uuid.uuid4())
    try:
        authenticate()
        form = query_protocol.parse_form(request.get_data(cache=True))
        action = form.get("Action", "")
        if not action:
            raise MissingParameter("The request must contain the parameter Action.")
        _operation(action)  # InvalidAction / NotImplemented before the form is read
        operation = _model().operation_model(action)
        try:
            params = query_protocol.from_form(operation.input_shape, form)
        except query_protocol.QueryParseError as exc:
            raise InvalidParameterValue(str(exc)) from exc
        result = _run(action, params)
    except PlatformError as err:
        sender = getattr(err, "sender", err.http_status < 500)
        return _xml(
            query_protocol.error(XML_NAMESPACE, err.code, err.message, request_id, sender=sender), err.http_status
        )
    return _xml(query_protocol.response(action, XML_NAMESPACE, operation.output_shape, result, request_id), 200)


def _xml(body: str, status: int) -> Response:
    return Response(body, status=status, content_type="text/xml")


@bp.post("/service/GraniteServiceVersion20100801/operation/<name>")
def cbor(name: str) -> Response:
    """Smithy RPC v2 CBOR: refused, clearly (boto3 and the AWS CLI use AWS JSON 1.0)."""
    err = NotImplementedFeature(
        f"CloudWatch over Smithy RPC v2 CBOR ({name}) is not implemented by neurondock; use AWS JSON 1.0 "
        "(boto3, the AWS CLI) or the Query protocol."
    )
    return json_error(err, str(uuid.uuid4()))
