"""The router for callers off the request path (async inference workers), on a loop of its own.

A Celery worker runs tasks on threads; the replica channel (``client.ReplicaClient``) and the router
are asyncio. This runs one event loop per worker process in a thread, with the same routing table,
router and one wrapper around replica calls the runtime front door uses, and lets a task thread wait
on it. The table is read again before each request (no background refresh: a worker sends far fewer
requests than the front door, and each must see replicas that came up while it waited).

An endpoint's Data Capture covers these invocations too (docs/data-capture.md): given a capture
writer, a successful answer is sampled into it on this loop, and its flusher (and a metrics flusher
for its written and lost counts) run here as well.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform.dataplane.capture import CaptureWriter
from neurondock_platform.dataplane.client import ReplicaCaller, ReplicaClient
from neurondock_platform.dataplane.metrics import MetricsFlusher
from neurondock_platform.dataplane.router import RoutedAnswer, Router
from neurondock_platform.dataplane.routing import RoutingTable
from neurondock_platform.errors import EndpointNotFoundError, ServiceUnavailable

# Beyond the invocation timeout, how long a task thread waits for the loop before giving up.
GRACE_SECONDS = 30.0


class BackgroundInvoker:
    """Blocking ``invoke`` for task threads, served by a router on a private event loop."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        caller: ReplicaCaller | None = None,
        *,
        capture: CaptureWriter | None = None,
        capture_metrics: MetricsFlusher | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="neurondock-invoker", daemon=True)
        self._thread.start()
        self.table = RoutingTable(session_factory)
        self.caller = caller or ReplicaClient()
        self.router = Router(self.table, self.caller)
        self.capture = capture
        self.capture_metrics = capture_metrics
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)

    async def _start(self) -> None:
        if self.capture is not None:
            self.capture.start()
        if self.capture_metrics is not None:
            self.capture_metrics.start()

    def invoke(
        self, account_id: str, endpoint_name: str, meta: dict[str, Any], body: bytes, timeout: float
    ) -> RoutedAnswer:
        """Send one request to a replica of the endpoint and wait for its answer (router errors propagate)."""
        work = self._invoke(account_id, endpoint_name, meta, body, timeout)
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        return future.result(timeout + GRACE_SECONDS)

    async def _invoke(
        self, account_id: str, endpoint_name: str, meta: dict[str, Any], body: bytes, timeout: float
    ) -> RoutedAnswer:
        await self.table.refresh()
        route = await self.table.get(account_id, endpoint_name)
        if route is None:
            raise EndpointNotFoundError(name=endpoint_name, account_id=account_id)
        if not route.servable or not any(v.replicas for v in route.variants):
            raise ServiceUnavailable(f"Endpoint {endpoint_name} has no replica ready to serve; retry shortly.")
        answer = await self.router.invoke(route, None, meta, body, timeout)
        if self.capture is not None and route.capture is not None and int(answer.meta.get("status", 500)) == 200:
            answer_type = str(answer.meta.get("content_type") or "application/octet-stream")
            self.capture.observe(
                account_id, endpoint_name, answer.variant, route.capture, meta, body, answer_type, answer.body
            )
        return answer

    async def _stop(self) -> None:
        if self.capture is not None:
            await self.capture.stop()
        if self.capture_metrics is not None:
            await self.capture_metrics.stop()
        await self.caller.close()

    def close(self) -> None:
        """Write what capture still holds, close the replica connections and stop the loop."""
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(GRACE_SECONDS)
        self._loop.call_soon_threadsafe(self._loop.stop)
