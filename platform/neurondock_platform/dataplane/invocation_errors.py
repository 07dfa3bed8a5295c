"""Failed invocations, kept in memory per endpoint until the metrics flush writes them.

Recording one is an append to a bounded deque on the event loop: no I/O and nothing on a successful
request but an ``InvocationTrace`` the router fills in (variant, replica). ``MetricsFlusher`` takes
what accumulated every ~10 s and writes it to ``invocation_errors`` (``services/invocation_errors.py``).
Each endpoint's ring holds its newest ``RING_SIZE`` failures since the last flush, so an error storm
costs bounded memory and the table receives at most that many rows per endpoint per flush; the
older ones are counted in ``dropped``.

Only failures of an endpoint that exists in the caller's account are kept (the runtime checks
before recording), so the set of rings is bounded by the endpoints, not by what callers send.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

RING_SIZE = 50
MESSAGE_MAX = 1024
EndpointKey = tuple[str, str]  # account id, endpoint name


@dataclass(slots=True)
class InvocationTrace:
    """How far one request got: which account, endpoint, variant and replica a failure belongs to."""

    account_id: str | None = None
    endpoint_name: str | None = None
    variant_name: str | None = None
    replica_id: int | None = None


@dataclass(frozen=True, slots=True)
class FailedInvocation:
    """One invocation the data plane answered with a 4xx or 5xx."""

    account_id: str
    endpoint_name: str
    variant_name: str | None
    http_status: int
    error_code: str
    message: str
    request_id: str
    replica_id: int | None = None
    original_status_code: int | None = None
    original_message: str | None = None
    at: float = field(default_factory=time.time)

    def to_row(self, source: str) -> dict[str, Any]:
        """Return the ``invocation_errors`` row."""
        return {
            "account_id": self.account_id,
            "endpoint_name": self.endpoint_name,
            "variant_name": self.variant_name,
            "replica_id": self.replica_id,
            "http_status": self.http_status,
            "error_code": self.error_code[:64],
            "message": self.message[:MESSAGE_MAX],
            "original_status_code": self.original_status_code,
            "original_message": None if self.original_message is None else self.original_message[:MESSAGE_MAX],
            "request_id": self.request_id[:64],
            "occurred_at": dt.datetime.fromtimestamp(self.at, dt.UTC),
            "source": source[:64],
        }


class InvocationErrorLog:
    """The newest failures of each endpoint since the last ``take``; every method runs on the event loop."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self.size = size
        self.rings: dict[EndpointKey, deque[FailedInvocation]] = {}
        self.dropped = 0

    def record(self, failure: FailedInvocation) -> None:
        """Keep one failure, pushing out the endpoint's oldest when its ring is full."""
        key = (failure.account_id, failure.endpoint_name)
        ring = self.rings.get(key)
        if ring is None:
            ring = self.rings[key] = deque(maxlen=self.size)
        elif len(ring) == self.size:
            self.dropped += 1
        ring.append(failure)

    def take(self) -> list[FailedInvocation]:
        """Return every kept failure, oldest first per endpoint, and start empty."""
        rings, self.rings = self.rings, {}
        return [failure for ring in rings.values() for failure in ring]

    def restore(self, failures: Iterable[FailedInvocation]) -> None:
        """Put back failures a flush could not write, behind any recorded since (the ring bound holds)."""
        current, self.rings = self.rings, {}
        for failure in failures:
            self.record(failure)
        for ring in current.values():
            for failure in ring:
                self.record(failure)

    def __len__(self) -> int:
        return sum(len(ring) for ring in self.rings.values())
