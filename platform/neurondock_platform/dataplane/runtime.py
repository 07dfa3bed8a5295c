"""The sagemaker-runtime front door (restJson1) as a small ASGI app: the fast invocation path.

It runs on the event loop, not in Flask: a WSGI handler blocking on a second process costs about
1.5 ms more per call (measured-here.md), and bodies stay binary from socket to replica.

Every 4xx/5xx answer to an invocation of an existing endpoint of the caller's account is kept for
the endpoint's error list (``metrics.errors``, written with the metrics flush), with the request id
the caller got. A 413 is refused before the body is read, so before the signature can be checked:
it is not recorded (anyone who knows a key id and an endpoint name could otherwise fill the list); it
still counts in Invocation4XXErrors only when the request was authenticated, which it never is.
"""

from __future__ import annotations

import binascii
import json
import logging
import re
import struct
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform.api.auth import CredentialCache
from neurondock_platform.config import Settings
from neurondock_platform.dataplane.auth import Authenticator, IncomingRequest, Principal, default_authenticator
from neurondock_platform.dataplane.client import ReplicaCaller, ReplicaClient, ReplicaTimeout
from neurondock_platform.dataplane.invocation_errors import FailedInvocation, InvocationTrace
from neurondock_platform.dataplane.metrics import FLUSH_SECONDS, MetricsCollector, MetricsFlusher
from neurondock_platform.dataplane.protocol import OP_INVOKE
from neurondock_platform.dataplane.router import RoutedAnswer, Router
from neurondock_platform.dataplane.routing import EndpointRoute, RoutingTable
from neurondock_platform.errors import (
    EndpointNotFoundError,
    ModelError,
    PayloadTooLarge,
    PlatformError,
    RuntimeValidationError,
)

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_PATH_RE = re.compile(r"^/endpoints/(?P<name>[^/]+)/(?P<op>invocations|invocations-response-stream)$")
_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_HEADER_LIMITS = {
    "content-type": 1024,
    "accept": 1024,
    "x-amzn-sagemaker-custom-attributes": 1024,
    "x-amzn-sagemaker-target-variant": 63,
    "x-amzn-sagemaker-inference-id": 64,
}


def matches(path: str) -> bool:
    """Whether this app serves the path."""
    return path.startswith("/endpoints/")


def _event_header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v


def event_frame(event_type: str, payload: bytes, content_type: str = "application/octet-stream") -> bytes:
    """Encode one AWS event-stream message (sagemaker-api.md §1.2)."""
    headers = (
        _event_header(":event-type", event_type)
        + _event_header(":message-type", "event")
        + _event_header(":content-type", content_type)
    )
    prelude = struct.pack(">II", 12 + len(headers) + len(payload) + 4, len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + headers + payload
    return message + struct.pack(">I", binascii.crc32(message) & 0xFFFFFFFF)


class RuntimeApp:
    """ASGI handler for ``POST /endpoints/<name>/invocations``; owns the data plane's shared parts.

    The routing table, router, replica client, authenticator and metrics collector live here and
    are shared with the OIP front door (``dataplane/oip.py``) and ``GET /metrics``.
    """

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        credentials: CredentialCache,
        caller: ReplicaCaller | None = None,
        table: RoutingTable | None = None,
        *,
        metrics: MetricsCollector | None = None,
        authenticator: Authenticator | None = None,
        flush_interval: float | None = None,
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.table = table or RoutingTable(session_factory)
        self.caller = caller or ReplicaClient()
        self.metrics = metrics or MetricsCollector()
        self.authenticator = authenticator or default_authenticator(credentials, settings.clock_skew_seconds)
        self.router = Router(self.table, self.caller, metrics=self.metrics)
        self.flusher = MetricsFlusher(self.metrics, session_factory, interval=flush_interval or FLUSH_SECONDS)
        listeners = getattr(self.table, "listeners", None)
        if listeners is not None:
            listeners.append(self.metrics.observe_routes)

    async def startup(self) -> None:
        """Start refreshing routes and flushing metrics."""
        # The loop thread must win the GIL back quickly from background threads (route refreshes,
        # Flask control-plane requests): at the default 5 ms switch interval one of them can hold an
        # invocation for 5 ms, which is the whole p99 budget.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        self.table.start()
        self.flusher.start()

    async def shutdown(self) -> None:
        """Stop refreshing routes, write the last metrics and close replica connections."""
        await self.table.stop()
        await self.flusher.stop()
        await self.caller.close()

    async def serve_metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /metrics``: the Prometheus text format, unauthenticated like Triton's metrics port.

        It names endpoints and variants of every account (no payloads, no keys): bind the server to
        a trusted interface, or keep /metrics from the outside at the proxy, as with Triton's :8002.
        """
        if scope["method"] not in ("GET", "HEAD"):
            await _send_json(send, 405, {"message": "Use GET /metrics."}, str(uuid.uuid4()))
            return
        body = self.metrics.render(self.router.outstanding)
        headers = [
            (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = str(uuid.uuid4())
        trace = InvocationTrace()
        try:
            await self._handle(scope, receive, send, request_id, trace)
        except PlatformError as err:
            await _send_error(send, err, request_id)
            await self.note_failure(scope, trace, err, request_id)
        except Exception:
            log.exception("unexpected error on %s", scope.get("path"))
            await _send_json(
                send,
                500,
                {"__type": "InternalFailure", "message": "An internal error occurred."},
                request_id,
                error_type="InternalFailure",
            )
            await self.note_failure(scope, trace, None, request_id)

    async def note_failure(
        self, scope: Scope, trace: InvocationTrace, err: PlatformError | None, request_id: str
    ) -> None:
        """Keep a failed invocation for its endpoint's error list (after the answer went out)."""
        if isinstance(err, EndpointNotFoundError) or trace.endpoint_name is None:
            return
        try:
            # Only an authenticated caller has an account here (a 413 never does: its body went unread).
            account_id, message = trace.account_id, err.message if err is not None else "An internal error occurred."
            # Only endpoints that exist in the account get a ring, whatever names callers send.
            if account_id is None or await self.table.get(account_id, trace.endpoint_name) is None:
                return
            self.metrics.errors.record(
                FailedInvocation(
                    account_id=account_id,
                    endpoint_name=trace.endpoint_name,
                    variant_name=trace.variant_name,
                    http_status=err.http_status if err is not None else 500,
                    error_code=err.code if err is not None else "InternalFailure",
                    message=message,
                    request_id=request_id,
                    replica_id=trace.replica_id,
                    original_status_code=err.original_status_code if isinstance(err, ModelError) else None,
                    original_message=err.original_message if isinstance(err, ModelError) else None,
                )
            )
        except Exception:
            log.exception("could not record a failed invocation of %s", trace.endpoint_name)

    async def read_body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        """Read the whole request body, refusing more than the 6 MiB InvokeEndpoint limit."""
        limit = self.settings.max_payload_bytes
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(size=int(declared), limit=limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RuntimeValidationError("Client disconnected before sending the whole body.")
            chunk = message.get("body", b"")
            if not message.get("more_body", False) and not chunks:
                if len(chunk) > limit:
                    raise PayloadTooLarge(size=len(chunk), limit=limit)
                return chunk  # the usual case: one message, no join
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(size=size, limit=limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def authenticate(self, scope: Scope, headers: dict[str, str], body: bytes) -> Principal:
        """Return the caller, or raise the AWS auth error a client would get."""
        query = scope.get("query_string", b"").decode("latin-1")
        return await self.authenticator.authenticate(
            IncomingRequest(scope["method"], scope["path"], query, headers, body)
        )

    async def route(self, principal: Principal, name: str) -> EndpointRoute:
        """Return a servable endpoint's route, or raise the runtime's not-found or not-servable error."""
        route = await self.table.get(principal.account_id, name)
        if route is None:
            raise EndpointNotFoundError(name=name, account_id=principal.account_id)
        if not route.servable:
            raise RuntimeValidationError(
                f"Endpoint {name} of account {principal.account_id} is in status {route.status.value} "
                "and cannot be invoked; it must be InService."
            )
        return route

    async def invoke(
        self,
        principal: Principal,
        route: EndpointRoute,
        target_variant: str | None,
        meta: dict[str, Any],
        body: bytes,
        started: float,
        trace: InvocationTrace | None = None,
    ) -> RoutedAnswer:
        """Route one invocation; a replica timeout becomes the runtime's ModelError."""
        try:
            return await self.router.invoke(
                route, target_variant, meta, body, self.settings.model_timeout, started=started, trace=trace
            )
        except ReplicaTimeout as exc:
            raise ModelError(
                'Received server error (0) from model with message "Your invocation timed out while waiting for a '
                f"response from container model. Review the latency metrics for each container in Amazon "
                f'CloudWatch, resolve the issue, and try again.". ({exc})',
                original_status_code=0,
                original_message="timed out",
                log_stream_arn=self._log_arn(principal.account_id, route.name),
            ) from exc

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, trace: InvocationTrace
    ) -> None:
        started = time.perf_counter()
        m = _PATH_RE.match(scope["path"])
        if m is None or scope["method"] != "POST":
            raise RuntimeValidationError(f"No runtime operation at {scope['method']} {scope['path']}.")
        name, op = m["name"], m["op"]
        trace.endpoint_name = name
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await self.read_body(receive, headers)
        principal = await self.authenticate(scope, headers, body)
        trace.account_id = principal.account_id
        if not _NAME_RE.match(name):
            raise RuntimeValidationError(
                f"1 validation error detected: Value '{name}' at 'endpointName' failed to satisfy constraint: "
                "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*"
            )
        for header, limit in _HEADER_LIMITS.items():
            value = headers.get(header)
            if value is not None and len(value) > limit:
                raise RuntimeValidationError(f"Header {header} is longer than {limit} characters.")
        route = await self.route(principal, name)
        accept = headers.get("x-amzn-sagemaker-accept") if op != "invocations" else headers.get("accept")
        meta = {
            "op": OP_INVOKE,
            "content_type": headers.get("content-type"),
            "accept": accept,
            "custom_attributes": headers.get("x-amzn-sagemaker-custom-attributes"),
            "inference_id": headers.get("x-amzn-sagemaker-inference-id"),
        }
        answer = await self.invoke(
            principal, route, headers.get("x-amzn-sagemaker-target-variant"), meta, body, started, trace
        )
        status = int(answer.meta.get("status", 500))
        if status != 200:
            raise self._model_error(principal.account_id, name, answer.variant, status, answer.meta)
        out_headers = [
            (b"x-amzn-requestid", request_id.encode()),
            (b"x-amzn-invoked-production-variant", answer.variant.encode()),
            *timing_headers(started, answer),
        ]
        if answer.meta.get("custom_attributes"):
            out_headers.append((b"x-amzn-sagemaker-custom-attributes", str(answer.meta["custom_attributes"]).encode()))
        content_type = str(answer.meta.get("content_type") or "application/octet-stream")
        if op == "invocations":
            out_headers.append((b"content-type", content_type.encode()))
            payload = answer.body
        else:
            out_headers.append((b"content-type", b"application/vnd.amazon.eventstream"))
            out_headers.append((b"x-amzn-sagemaker-content-type", content_type.encode()))
            payload = event_frame("PayloadPart", answer.body)
        out_headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": out_headers})
        await send({"type": "http.response.body", "body": payload})

    def _log_arn(self, account_id: str, name: str) -> str:
        return f"arn:aws:logs:{self.settings.region}:{account_id}:log-group:/aws/sagemaker/Endpoints/{name}"

    def _model_error(self, account_id: str, name: str, variant: str, status: int, meta: dict[str, Any]) -> ModelError:
        kind = "client" if 400 <= status < 500 else "server"
        original = str(meta.get("message") or "")
        region = self.settings.region
        message = (
            f'Received {kind} error ({status}) from primary with message "{original[:2000]}". See '
            f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logEventViewer:group="
            f"/aws/sagemaker/Endpoints/{name} in account {account_id} for more information."
        )
        return ModelError(
            message,
            original_status_code=status,
            original_message=original,
            log_stream_arn=self._log_arn(account_id, name) + f":log-stream:{variant}",
        )


def timing_headers(started: float, answer: RoutedAnswer) -> list[tuple[bytes, bytes]]:
    """OverheadLatency in ``x-neurondock-overhead-us`` and the breakdown as a ``Server-Timing`` header.

    ``overhead`` is SageMaker's OverheadLatency (everything but the replica round trip); ``model`` is
    ModelLatency (the round trip); ``queue`` and ``compute`` are the replica's own share of it.
    """
    total_us = (time.perf_counter() - started) * 1e6
    model_us = answer.model_latency_us
    overhead_us = max(0, int(total_us - model_us))
    meta = answer.meta
    timing = (
        f"overhead;dur={overhead_us / 1000:.3f}, model;dur={model_us / 1000:.3f}, "
        f"queue;dur={int(meta.get('queue_us') or 0) / 1000:.3f}, "
        f"compute;dur={int(meta.get('model_latency_us') or 0) / 1000:.3f}, batch;desc={meta.get('batch_size', 1)}"
    )
    return [(b"x-neurondock-overhead-us", str(overhead_us).encode()), (b"server-timing", timing.encode())]


async def _send_json(
    send: Send, status: int, payload: dict[str, Any], request_id: str, *, error_type: str | None = None
) -> None:
    body = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-amzn-requestid", request_id.encode()),
    ]
    if error_type:
        headers.append((b"x-amzn-errortype", error_type.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, err: PlatformError, request_id: str) -> None:
    await _send_json(send, err.http_status, err.body(), request_id, error_type=err.code)
