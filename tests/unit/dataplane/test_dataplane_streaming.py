"""The response-stream front door with a fake replica: parts as events, and every way a stream can end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer
from tests.conftest import ACCOUNT_ID, sign
from tests.unit.dataplane.fakes import StaticTable, asgi_call, verifier

from neurondock_platform.dataplane.client import ReplicaTimeout, StreamInterrupted
from neurondock_platform.dataplane.routing import EndpointRoute, ReplicaRoute, VariantRoute
from neurondock_platform.dataplane.runtime import RuntimeApp
from neurondock_platform.models import EndpointStatus

ROUTE = EndpointRoute(
    ACCOUNT_ID, "ep", EndpointStatus.IN_SERVICE, (VariantRoute("AllTraffic", 1.0, (ReplicaRoute(1, "x:1"),)),)
)


class StreamingCaller:
    """Streams ``parts``, then ends as ``ending`` says: ok, error (a 500 answer), timeout, lost or crash."""

    def __init__(self, parts: list[bytes], ending: str = "ok") -> None:
        self.parts, self.ending = parts, ending
        self.calls: list[dict[str, Any]] = []

    async def call(self, address, meta, body, timeout, *, key="", on_chunk=None):
        self.calls.append(dict(meta))
        if on_chunk is None:
            return {"status": 200, "content_type": "text/plain"}, b"".join(self.parts)
        for part in self.parts:
            await on_chunk({"kind": "chunk", "content_type": "application/jsonlines", "custom_attributes": "c=1"}, part)
        if self.ending == "timeout":
            raise ReplicaTimeout("no next part")
        if self.ending == "lost":
            raise StreamInterrupted("replica went away")
        if self.ending == "crash":
            raise RuntimeError("a bug in the platform")
        if self.ending == "error":
            return {"status": 500, "message": "RuntimeError: the vocoder broke"}, b""
        if not self.parts:
            return {"status": 200, "content_type": "audio/wav"}, b"whole"
        return {"status": 200, "parts": len(self.parts)}, b""

    def abandon(self, address, key) -> None: ...

    async def close(self) -> None: ...


@pytest.fixture
def stream(settings, session_factory):
    def run(caller: StreamingCaller, headers: dict[str, str] | None = None):
        app = RuntimeApp(
            settings,
            session_factory,
            verifier(settings, session_factory),
            caller=caller,
            table=StaticTable({(ACCOUNT_ID, "ep"): ROUTE}),
        )
        path = "/endpoints/ep/invocations-response-stream"
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        signed = sign("POST", f"http://localhost{path}", body=b"{}", headers=hdrs)
        signed["Host"] = "localhost"
        status, out_headers, body = asyncio.run(asgi_call(app, "POST", path, b"{}", signed))
        return status, out_headers, body, app

    return run


def _messages(body: bytes) -> list[tuple[dict[str, Any], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(body)
    return [(msg.headers, msg.payload) for msg in buffer]


def test_each_part_is_a_payload_part_event_behind_the_stream_headers(stream) -> None:
    caller = StreamingCaller([b"a", b"bc"])
    status, headers, body, app = stream(caller, {"X-Amzn-SageMaker-Accept": "application/jsonlines"})
    assert status == 200 and "content-length" not in headers
    assert headers["content-type"] == "application/vnd.amazon.eventstream"
    assert headers["x-amzn-sagemaker-content-type"] == "application/jsonlines"
    assert headers["x-amzn-invoked-production-variant"] == "AllTraffic"
    assert headers["x-amzn-sagemaker-custom-attributes"] == "c=1"
    assert [(h[":event-type"], p) for h, p in _messages(body)] == [("PayloadPart", b"a"), ("PayloadPart", b"bc")]
    assert caller.calls[0]["stream"] is True and caller.calls[0]["accept"] == "application/jsonlines"
    stats = app.metrics.variants[(ACCOUNT_ID, "ep", "AllTraffic")]
    assert stats.first_part_latency.count == 1 and stats.model_latency.count == 1


def test_an_answer_in_one_piece_is_one_part(stream) -> None:
    status, headers, body, _ = stream(StreamingCaller([]))
    assert status == 200 and headers["x-amzn-sagemaker-content-type"] == "audio/wav"
    assert [p for _, p in _messages(body)] == [b"whole"]


@pytest.mark.parametrize(
    ("ending", "exception", "code", "words"),
    [
        ("error", "ModelStreamError", "StreamBroken", "the vocoder broke"),
        ("lost", "ModelStreamError", "StreamBroken", "closed before it finished"),
        ("timeout", "ModelStreamError", "ModelInvocationTimeExceeded", "did not complete sending"),
        ("crash", "InternalStreamFailure", None, "internal error"),
    ],
)
def test_a_stream_that_breaks_after_its_first_part_ends_with_an_exception_event(
    stream, ending, exception, code, words
) -> None:
    status, _, body, app = stream(StreamingCaller([b"first"], ending))
    assert status == 200
    (part_headers, part), (headers, payload) = _messages(body)
    assert part == b"first" and part_headers[":message-type"] == "event"
    assert headers[":message-type"] == "exception" and headers[":exception-type"] == exception
    error = json.loads(payload)
    assert error.get("ErrorCode") == code and words in error["Message"]
    (failure,) = app.metrics.errors.take()
    assert failure.error_code == (exception if exception == "ModelStreamError" else "InternalFailure")


def test_a_failure_before_the_first_part_is_an_http_error(stream) -> None:
    status, headers, body, _ = stream(StreamingCaller([], "timeout"))
    assert status == 424 and headers["x-amzn-errortype"] == "ModelError"
    assert headers["content-type"] == "application/json" and json.loads(body)["OriginalStatusCode"] == 0


def test_a_client_that_goes_away_stops_the_stream_at_the_next_part(settings, session_factory) -> None:
    class Endless:
        """Streams until the runtime's on_chunk refuses a part."""

        def __init__(self) -> None:
            self.sent = 0
            self.refused: BaseException | None = None

        async def call(self, address, meta, body, timeout, *, key="", on_chunk=None):
            try:
                while self.sent < 100:
                    await on_chunk({"kind": "chunk", "content_type": "text/plain"}, b"x")
                    self.sent += 1
                    if self.sent == 2:
                        disconnected.set()
                    await asyncio.sleep(0.01)
            except Exception as exc:  # what the client's wrapper sees: it closes the replica connection
                self.refused = exc
                raise
            return {"status": 200}, b""

        def abandon(self, address, key) -> None: ...

        async def close(self) -> None: ...

    caller = Endless()
    app = RuntimeApp(
        settings,
        session_factory,
        verifier(settings, session_factory),
        caller=caller,
        table=StaticTable({(ACCOUNT_ID, "ep"): ROUTE}),
    )
    path = "/endpoints/ep/invocations-response-stream"
    signed = sign("POST", f"http://localhost{path}", body=b"{}", headers={"Content-Type": "application/json"})
    signed["Host"] = "localhost"
    headers = [(k.lower().encode(), v.encode()) for k, v in signed.items()]
    disconnected = asyncio.Event()
    bodies: list[bytes] = []
    requests = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        bodies.append(message.get("body", b""))

    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "headers": headers}
    asyncio.run(app(scope, receive, send))
    assert type(caller.refused).__name__ == "CallerGone"
    assert 2 <= caller.sent < 10
