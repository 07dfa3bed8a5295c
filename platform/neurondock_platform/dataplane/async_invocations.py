"""``POST /endpoints/<name>/async-invocations`` (InvokeEndpointAsync): accept, record, answer 202.

The request is written to the database (and its task queued after that commit) before the 202
leaves, so nothing a caller was told is accepted can be lost; a worker runs it later
(docs/async.md). The input is an ``X-Amzn-SageMaker-InputLocation`` S3 URI, which the worker reads
with the endpoint owner's credentials, or an inline body of at most 128,000 bytes (boto3 ≥ 1.44
sends ``Body`` raw, with the content type only in ``X-Amzn-SageMaker-Content-Type``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from typing import Any

from neurondock_platform.dataplane.runtime import Receive, RuntimeApp, Scope, Send, _send_error, _send_json
from neurondock_platform.db import session_scope
from neurondock_platform.errors import PlatformError, RuntimeValidationError
from neurondock_platform.services import async_inference
from neurondock_platform.services.async_inference import AsyncRequest

log = logging.getLogger(__name__)

_PATH_RE = re.compile(r"^/endpoints/(?P<name>[^/]+)/async-invocations$")
_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# botocore's sagemaker-runtime model: InputLocationHeader, S3OutputPathExtensionHeader, FilenameHeader.
_INPUT_RE = re.compile(r"^(https|s3)://([^/]+)/?(.*)$")
_EXTENSION_RE = re.compile(r"^(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+$")
_FILENAME_RE = re.compile(r"^(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9-_\.]*$")
_PRINTABLE_RE = re.compile(r"^\S[\x20-\x7e]*$")


def matches(path: str) -> bool:
    """Whether this app serves the path."""
    return path.startswith("/endpoints/") and path.endswith("/async-invocations")


def _violation(value: Any, member: str, constraint: str) -> RuntimeValidationError:
    return RuntimeValidationError(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
    )


def _text(headers: dict[str, str], name: str, member: str, limit: int, pattern: re.Pattern[str] | None) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    if not 1 <= len(value) <= limit:
        raise _violation(value, member, f"Member must have length between 1 and {limit}")
    if pattern is not None and not pattern.match(value):
        raise _violation(value, member, f"Member must satisfy regular expression pattern: {pattern.pattern}")
    return value


def _seconds(headers: dict[str, str], name: str, member: str, low: int, high: int, default: int) -> int:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _violation(raw, member, "Member must be an integer") from None
    if value < low:
        raise _violation(value, member, f"Member must have value greater than or equal to {low}")
    if value > high:
        raise _violation(value, member, f"Member must have value less than or equal to {high}")
    return value


def parse(headers: dict[str, str], body: bytes) -> AsyncRequest:
    """Check InvokeEndpointAsync's headers against botocore's model; return the request."""
    location = _text(headers, "x-amzn-sagemaker-inputlocation", "inputLocation", 1024, _INPUT_RE)
    if location is not None and body:
        raise RuntimeValidationError("Body and InputLocation are mutually exclusive. Provide exactly one of them.")
    if location is None and not body:
        raise RuntimeValidationError("Provide exactly one of InputLocation and Body.")
    if len(body) > async_inference.INLINE_LIMIT:
        raise _violation(
            "[SENSITIVE]", "body", f"Member must have length less than or equal to {async_inference.INLINE_LIMIT}"
        )
    return AsyncRequest(
        input_location=location,
        body=None if location is not None else body,
        content_type=_text(headers, "x-amzn-sagemaker-content-type", "contentType", 1024, None),
        accept=_text(headers, "x-amzn-sagemaker-accept", "accept", 1024, None),
        custom_attributes=_text(headers, "x-amzn-sagemaker-custom-attributes", "customAttributes", 1024, None),
        inference_id=_text(headers, "x-amzn-sagemaker-inference-id", "inferenceId", 64, _PRINTABLE_RE),
        output_path_extension=_text(
            headers, "x-amzn-sagemaker-s3outputpathextension", "s3OutputPathExtension", 512, _EXTENSION_RE
        ),
        filename=_text(headers, "x-amzn-sagemaker-filename", "filename", 32, _FILENAME_RE),
        ttl_seconds=_seconds(
            headers,
            "x-amzn-sagemaker-requestttlseconds",
            "requestTTLSeconds",
            60,
            21600,
            async_inference.DEFAULT_TTL_SECONDS,
        ),
        timeout_seconds=_seconds(
            headers,
            "x-amzn-sagemaker-invocationtimeoutseconds",
            "invocationTimeoutSeconds",
            1,
            3600,
            async_inference.DEFAULT_TIMEOUT_SECONDS,
        ),
    )


class AsyncInvocationsApp:
    """ASGI handler of InvokeEndpointAsync, sharing the runtime's authenticator and body reader."""

    def __init__(self, runtime: RuntimeApp) -> None:
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = str(uuid.uuid4())
        try:
            await self._handle(scope, receive, send, request_id)
        except PlatformError as err:
            await _send_error(send, err, request_id)
        except Exception:
            log.exception("unexpected error on %s", scope.get("path"))
            await _send_json(
                send,
                500,
                {"__type": "InternalFailure", "message": "An internal error occurred."},
                request_id,
                error_type="InternalFailure",
            )

    async def _handle(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        m = _PATH_RE.match(scope["path"])
        if m is None or scope["method"] != "POST":
            raise RuntimeValidationError(f"No runtime operation at {scope['method']} {scope['path']}.")
        name = m["name"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        read = await self.runtime.read_body(receive, headers)
        principal = await self.runtime.authenticate(scope, headers, read)
        body = read.data
        if not _NAME_RE.match(name):
            raise _violation(
                name, "endpointName", "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*"
            )
        request = parse(headers, body)
        accepted = await asyncio.to_thread(self._accept, principal.account_id, name, request)
        payload = json.dumps({"InferenceId": accepted[0]}).encode()
        out = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"x-amzn-requestid", request_id.encode()),
            (b"x-amzn-sagemaker-outputlocation", accepted[1].encode()),
        ]
        if accepted[2]:
            out.append((b"x-amzn-sagemaker-failurelocation", accepted[2].encode()))
        await send({"type": "http.response.start", "status": 202, "headers": out})
        await send({"type": "http.response.body", "body": payload})

    def _accept(self, account_id: str, name: str, request: AsyncRequest) -> tuple[str, str, str | None]:
        # Committed before the answer: the task leaves after this commit, the 202 after that.
        with session_scope(self.runtime.session_factory) as session:
            row = async_inference.accept(session, account_id=account_id, endpoint_name=name, request=request)
            return row.inference_id, row.output_location, row.failure_location
