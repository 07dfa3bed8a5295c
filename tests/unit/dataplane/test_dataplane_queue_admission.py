"""A full job queue is refused at the front door before the request's body is read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from tests.conftest import ACCOUNT_ID, sign
from tests.unit.dataplane.fakes import StaticTable, verifier

from neurondock_platform.dataplane.routing import EndpointRoute, ReplicaRoute, VariantRoute
from neurondock_platform.dataplane.runtime import RuntimeApp
from neurondock_platform.models import EndpointStatus

LIMIT = 3


class HeldReplica:
    """A replica with a job queue of ``LIMIT`` that answers its first request at once and holds the rest."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    async def call(self, address, meta, body, timeout, *, key="", on_chunk=None):
        self.calls += 1
        if self.calls > 1:
            await self.release.wait()
        answer = {"status": 200, "content_type": "application/json", "queue_limit": LIMIT, "queue_depth": 0}
        return answer, body

    def abandon(self, address, key) -> None: ...

    async def close(self) -> None: ...


def _scope(body: bytes) -> dict[str, Any]:
    url = "http://localhost/endpoints/ep/invocations"
    headers = sign("POST", url, body=body, headers={"Content-Type": "application/json"})
    headers["Host"] = "localhost"
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/endpoints/ep/invocations",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    return scope


async def _call(app: RuntimeApp, body: bytes, reads: list[int]) -> tuple[int, dict[str, Any]]:
    scope = _scope(body)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        reads.append(1)
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(bytes(m.get("body", b"")) for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(payload) if start["status"] != 200 else {}


async def _until(condition: Callable[[], bool]) -> None:
    """Let the loop run the other requests until ``condition`` holds (10 s at most)."""
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0)


@pytest.fixture
def held_app(settings, session_factory) -> tuple[RuntimeApp, HeldReplica]:
    """A runtime app whose one endpoint routes to a fresh ``HeldReplica``."""
    replica = HeldReplica()
    route = EndpointRoute(
        ACCOUNT_ID, "ep", EndpointStatus.IN_SERVICE, (VariantRoute("AllTraffic", 1.0, (ReplicaRoute(1, "r:1"),)),)
    )
    app = RuntimeApp(
        settings,
        session_factory,
        verifier(settings, session_factory),
        caller=replica,
        table=StaticTable({(ACCOUNT_ID, "ep"): route}),  # type: ignore[arg-type]
    )
    return app, replica


def test_a_full_job_queue_refuses_before_reading_the_body_and_frees_up(held_app):
    app, replica = held_app

    async def scenario() -> None:
        reads: list[int] = []
        # The first answer tells the router the replica's job queue size.
        assert (await _call(app, b'{"x": 0}', reads))[0] == 200
        held = [asyncio.ensure_future(_call(app, b'{"x": 1}', [])) for _ in range(LIMIT)]
        await _until(lambda: app.router.outstanding[1] == LIMIT)
        reads.clear()
        status, error = await _call(app, b'{"x": 2}', reads)
        assert status == 429 and error["__type"] == "ThrottlingException", error
        assert "body was not read" in error["message"]
        assert reads == [] and replica.calls == 1 + LIMIT
        replica.release.set()
        assert [status for status, _ in await asyncio.gather(*held)] == [200] * LIMIT
        # Room again: the next request is read and served.
        assert (await _call(app, b'{"x": 3}', reads))[0] == 200 and reads == [1]

    asyncio.run(scenario())


def test_below_the_limit_every_request_is_read(held_app):
    app, replica = held_app

    async def scenario() -> None:
        assert (await _call(app, b"{}", []))[0] == 200
        held = [asyncio.ensure_future(_call(app, b"{}", [])) for _ in range(LIMIT - 1)]
        await _until(lambda: app.router.outstanding[1] == LIMIT - 1)
        reads: list[int] = []
        late = asyncio.ensure_future(_call(app, b"{}", reads))
        await _until(lambda: bool(reads))
        replica.release.set()
        assert [status for status, _ in await asyncio.gather(late, *held)] == [200] * LIMIT

    asyncio.run(scenario())
