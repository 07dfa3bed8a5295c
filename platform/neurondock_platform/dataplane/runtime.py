"""The sagemaker-runtime front door (restJson1) as a small ASGI app: the fast invocation path.

It runs on the event loop, not in Flask: a WSGI handler blocking on a second process costs about
1.5 ms more per call (docs/measured.md), and bodies stay binary from socket to replica.

Every 4xx/5xx answer to an invocation of an existing endpoint of the caller's account is kept for
the endpoint's error list (``metrics.errors``, written with the metrics flush), with the request id
the caller got. A 413, and a 429 when every job queue of every endpoint of that
name is full, are refused before the body is read, so before the signature can be checked: they are
not recorded (anyone who knows a key id and an endpoint name could otherwise fill the list), and
count in Invocation4XXErrors only when the request was authenticated, which they never are.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform import sigv4, wakeup
from neurondock_platform.config import Settings
from neurondock_platform.dataplane import eventstream
from neurondock_platform.dataplane.auth import (
    Authenticator,
    IncomingRequest,
    Principal,
    default_authenticator,
)
from neurondock_platform.dataplane.auth import metrics_authenticator as metrics_authenticator_for
from neurondock_platform.dataplane.capture import CaptureWriter, uuid4s, writer_for
from neurondock_platform.dataplane.client import (
    OnChunk,
    ReplicaCaller,
    ReplicaClient,
    ReplicaTimeout,
    StreamInterrupted,
)
from neurondock_platform.dataplane.invocation_errors import FailedInvocation, InvocationTrace
from neurondock_platform.dataplane.metrics import FLUSH_SECONDS, MetricsCollector, MetricsFlusher
from neurondock_platform.dataplane.protocol import OP_INVOKE
from neurondock_platform.dataplane.router import RoutedAnswer, Router, ThrottlingError
from neurondock_platform.dataplane.routing import EndpointRoute, RoutingTable
from neurondock_platform.errors import (
    EndpointNotFoundError,
    ModelError,
    ModelStreamError,
    PayloadTooLarge,
    PlatformError,
    RuntimeValidationError,
)
from neurondock_platform.models import Account

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


# SageMaker's words when a stream outlives the model timeout.
_STREAM_TIMEOUT = "Your model primary did not complete sending the inference response in the allotted time."


class CallerGone(Exception):
    """The client of a response stream went away: the parts nobody will read stop being produced."""


class StreamResponse:
    """One ``invocations-response-stream`` answer: headers at the first part, then one event per part."""

    __slots__ = ("_watcher", "gone", "request_id", "send", "started")

    def __init__(self, send: Send, request_id: str) -> None:
        self.send = send
        self.request_id = request_id
        self.started = False
        self.gone = False
        self._watcher: asyncio.Task[None] | None = None

    def watch(self, receive: Receive) -> None:
        """Notice the client disconnecting (the server then drops whatever is sent, without a word)."""

        async def wait() -> None:
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # the server has nothing more to say: nothing to watch
                return
            self.gone = True

        self._watcher = asyncio.get_running_loop().create_task(wait())

    def close(self) -> None:
        """Stop watching the client."""
        if self._watcher is not None:
            self._watcher.cancel()

    async def _start(self, variant: str, content_type: str, custom_attributes: Any) -> None:
        headers = [
            (b"x-amzn-requestid", self.request_id.encode()),
            (b"x-amzn-invoked-production-variant", variant.encode()),
            (b"content-type", eventstream.CONTENT_TYPE.encode()),
            (b"x-amzn-sagemaker-content-type", content_type.encode()),
        ]
        if custom_attributes:
            headers.append((b"x-amzn-sagemaker-custom-attributes", str(custom_attributes).encode()))
        # No content-length: the server sends chunked transfer encoding, one chunk per event.
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        self.started = True

    async def part(self, meta: dict[str, Any], body: bytes) -> None:
        """Send one streamed part (the router's ``on_chunk``); the first one sends the headers.

        Raises:
            CallerGone: the client disconnected; the replica connection is then closed, which stops the model.
        """
        if self.gone:
            raise CallerGone("the client closed the response stream")
        if not self.started:
            content_type = str(meta.get("content_type") or "application/octet-stream")
            await self._start(str(meta.get("variant") or ""), content_type, meta.get("custom_attributes"))
        await self.send({"type": "http.response.body", "body": eventstream.payload_part(body), "more_body": True})

    async def whole(self, answer: RoutedAnswer) -> None:
        """Send an answer that came in one piece as a stream of one part."""
        await self.part({**answer.meta, "variant": answer.variant}, answer.body)
        await self.end()

    async def end(self, last: bytes = b"") -> None:
        """End the stream (after ``last``, an exception event when it broke)."""
        await self.send({"type": "http.response.body", "body": last})

    async def fail(self, err: PlatformError | None) -> None:
        """End a started stream with the exception event boto3 raises mid-iteration."""
        if isinstance(err, ModelStreamError):
            last = eventstream.exception(eventstream.MODEL_STREAM_ERROR, err.message, err.error_code)
        else:
            message = err.message if err is not None else "An internal error occurred."
            last = eventstream.exception(eventstream.INTERNAL_STREAM_FAILURE, message)
        await self.end(last)


class RuntimeApp:
    """ASGI handler for ``POST /endpoints/<name>/invocations``; owns the data plane's shared parts.

    The routing table, router, replica client, authenticator and metrics collector live here and
    are shared with the OIP front door (``dataplane/oip.py``) and ``GET /metrics``.
    """

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        verifier: sigv4.Verifier,
        caller: ReplicaCaller | None = None,
        table: RoutingTable | None = None,
        *,
        metrics: MetricsCollector | None = None,
        authenticator: Authenticator | None = None,
        metrics_authenticator: Authenticator | None = None,
        flush_interval: float | None = None,
        capture: CaptureWriter | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.verifier = verifier
        self.table = table or RoutingTable(session_factory, bells=wakeup.bells_dir(settings.data_dir, wakeup.ROUTES))
        self.caller = caller or ReplicaClient()
        self.metrics = metrics or MetricsCollector()
        self.authenticator = authenticator or default_authenticator(verifier)
        self.metrics_authenticator = metrics_authenticator or metrics_authenticator_for(verifier)
        self.router = Router(self.table, self.caller, metrics=self.metrics)
        # (Claimed caller, endpoint name) → requests being read or authenticated, not forwarded yet: the
        # company a batching replica may wait for (docs/runtime.md, "Batching").
        self.arriving: dict[tuple[str, str], int] = defaultdict(int)
        self.flusher = MetricsFlusher(self.metrics, session_factory, interval=flush_interval or FLUSH_SECONDS)
        self.capture = capture or writer_for(settings, session_factory, self.metrics)
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
        self.capture.start()

    async def shutdown(self) -> None:
        """Stop refreshing routes, write the last captures and metrics and close replica connections."""
        await self.table.stop()
        await self.capture.stop()
        await self.flusher.stop()
        await self.caller.close()

    async def serve_metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /metrics``: the Prometheus text format, for an authenticated caller.

        The series name endpoints and variants, so a caller sees only its own account's unless it is
        an admin account (SigV4, or ``Authorization: Bearer`` with an admin API token, which a
        Prometheus scrape config can send). ``NEURONDOCK_METRICS_PUBLIC=true`` opens every series to
        anonymous scrapers, for an operator whose network keeps /metrics private (as Triton's :8002).
        """
        request_id = uuid4s(1)[0]
        if scope["method"] not in ("GET", "HEAD"):
            await _send_json(send, 405, {"message": "Use GET /metrics."}, request_id)
            return
        account_id: str | None = None
        if not self.settings.metrics_public:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                principal = await self.metrics_authenticator.authenticate(
                    IncomingRequest(scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1"),
                                    headers, b"")
                )  # fmt: skip
            except PlatformError as err:
                await _send_error(send, err, request_id)
                return
            if not await asyncio.to_thread(self._is_admin, principal.account_id):
                account_id = principal.account_id
        body = self.metrics.render(self.router.outstanding, account_id=account_id)
        headers_out = [
            (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers_out})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    def _is_admin(self, account_id: str) -> bool:
        with self.session_factory() as session:
            account = session.get(Account, account_id)
            return bool(account is not None and account.is_admin)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = uuid4s(1)[0]  # a random UUID, as uuid.uuid4's string in half its time
        trace = InvocationTrace()
        stream = StreamResponse(send, request_id)
        try:
            await self._handle(scope, receive, send, request_id, trace, stream)
        except CallerGone:
            log.info("the client of a response stream from %s went away; the stream stopped", scope.get("path"))
        except PlatformError as err:
            if stream.started:
                await stream.fail(err)
            else:
                await _send_error(send, err, request_id)
            await self.note_failure(scope, trace, err, request_id)
        except Exception:
            log.exception("unexpected error on %s", scope.get("path"))
            if stream.started:
                await stream.fail(None)
                await self.note_failure(scope, trace, None, request_id)
                return
            await _send_json(
                send,
                500,
                {"__type": "InternalFailure", "message": "An internal error occurred."},
                request_id,
                error_type="InternalFailure",
            )
            await self.note_failure(scope, trace, None, request_id)
        finally:
            stream.close()

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

    async def read_body(self, receive: Receive, headers: dict[str, str]) -> Body:
        """Read the whole request body, refusing more than the 6 MiB InvokeEndpoint limit.

        A body that arrives in several messages (uvicorn hands on 64 KiB and more at a time) is hashed
        for SigV4 piece by piece as it arrives, while the client is still sending the rest, rather than
        all at once after its last byte; the signature is still checked before anything is forwarded.
        """
        limit = self.settings.max_payload_bytes
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(size=int(declared), limit=limit)
        chunks: list[bytes] = []
        digest = None
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RuntimeValidationError("Client disconnected before sending the whole body.")
            chunk = message.get("body", b"")
            if not message.get("more_body", False) and not chunks:
                if len(chunk) > limit:
                    raise PayloadTooLarge(size=len(chunk), limit=limit)
                return Body(chunk)  # the usual case: one message, no join
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(size=size, limit=limit)
            chunks.append(chunk)
            if digest is None:
                digest = hashlib.sha256(chunk)
            else:
                digest.update(chunk)
            if not message.get("more_body", False):
                return Body(b"".join(chunks), digest.hexdigest())

    async def authenticate(self, scope: Scope, headers: dict[str, str], body: Body) -> Principal:
        """Return the caller, or raise the AWS auth error a client would get."""
        query = scope.get("query_string", b"").decode("latin-1")
        return await self.authenticator.authenticate(
            IncomingRequest(scope["method"], scope["path"], query, headers, body.data, body.sha256)
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
        on_chunk: OnChunk | None = None,
        streaming: StreamResponse | None = None,
        following: int = 0,
    ) -> RoutedAnswer:
        """Route one invocation; a replica timeout becomes the runtime's ModelError (ModelStreamError mid-stream)."""
        try:
            return await self.router.invoke(
                route,
                target_variant,
                meta,
                body,
                self.settings.model_timeout,
                started=started,
                trace=trace,
                on_chunk=on_chunk,
                following=following,
            )
        except StreamInterrupted as exc:
            raise ModelStreamError(
                f"The connection to the model was closed before it finished the response ({exc}).",
                error_code=eventstream.STREAM_BROKEN,
            ) from exc
        except ReplicaTimeout as exc:
            if streaming is not None and streaming.started:
                raise ModelStreamError(_STREAM_TIMEOUT, error_code=eventstream.TIME_EXCEEDED) from exc
            raise ModelError(
                'Received server error (0) from model with message "Your invocation timed out while waiting for a '
                f"response from container model. Review the latency metrics for each container in Amazon "
                f'CloudWatch, resolve the issue, and try again.". ({exc})',
                original_status_code=0,
                original_message="timed out",
                log_stream_arn=self._log_arn(principal.account_id, route.name),
            ) from exc

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        trace: InvocationTrace,
        stream: StreamResponse,
    ) -> None:
        started = time.perf_counter()
        m = _PATH_RE.match(scope["path"])
        if m is None or scope["method"] != "POST":
            raise RuntimeValidationError(f"No runtime operation at {scope['method']} {scope['path']}.")
        name, op = m["name"], m["op"]
        trace.endpoint_name = name
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        routes = self.table.routes_named(name) if self.router.full else None
        if routes and self.router.saturated(routes):
            # Refused before the body is read (a client sending Expect: 100-continue never sends it).
            raise ThrottlingError(
                variant=", ".join(v.name for route in routes for v in route.variants),
                endpoint=name,
                detail="job queue full on every replica; the request body was not read",
            )
        # Counted by the caller the request claims to be (the Authorization header up to the first "/":
        # SigV4's scheme and access key id) and the endpoint name, before either is verified, so that
        # one caller's requests never count as company for another account's endpoint of the same name.
        arriving = self.arriving
        claim = (headers.get("authorization", "").partition("/")[0], name)
        arriving[claim] += 1
        try:
            read = await self.read_body(receive, headers)
            principal = await self.authenticate(scope, headers, read)
        finally:
            if arriving[claim] > 1:
                arriving[claim] -= 1
            else:
                del arriving[claim]
        body = read.data
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
        streaming = op != "invocations"
        if streaming:
            meta["stream"] = True
            stream.watch(receive)
        answer = await self.invoke(
            principal,
            route,
            headers.get("x-amzn-sagemaker-target-variant"),
            meta,
            body,
            started,
            trace,
            on_chunk=stream.part if streaming else None,
            streaming=stream if streaming else None,
            following=arriving.get(claim, 0),
        )
        status = int(answer.meta.get("status", 500))
        if status != 200:
            error = self._model_error(principal.account_id, name, answer.variant, status, answer.meta)
            if stream.started:
                raise ModelStreamError(error.message, error_code=eventstream.STREAM_BROKEN)
            raise error
        if stream.started:
            await stream.end()
            return
        if streaming:
            await stream.whole(answer)
            return
        out_headers = [
            (b"x-amzn-requestid", request_id.encode()),
            (b"x-amzn-invoked-production-variant", answer.variant.encode()),
            *timing_headers(started, answer),
        ]
        if answer.meta.get("custom_attributes"):
            out_headers.append((b"x-amzn-sagemaker-custom-attributes", str(answer.meta["custom_attributes"]).encode()))
        content_type = str(answer.meta.get("content_type") or "application/octet-stream")
        out_headers.append((b"content-type", content_type.encode()))
        out_headers.append((b"content-length", str(len(answer.body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": out_headers})
        await send({"type": "http.response.body", "body": answer.body})
        if route.capture is not None:
            # After the answer went out: sampling and queueing only, never a failure of the invocation.
            self.capture.observe(
                principal.account_id, name, answer.variant, route.capture, meta, body, content_type, answer.body
            )

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


class Body(NamedTuple):
    """A request body as read, with its SHA-256 (hex) when it was hashed while it arrived."""

    data: bytes
    sha256: str | None = None


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
