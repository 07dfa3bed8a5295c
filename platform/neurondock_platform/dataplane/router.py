"""Pick a variant (weight or TargetVariant) and a replica (least outstanding), retrying on loss.

A replica that dies mid-request is retried on another (no lost request); a replica whose queue is
full answers 429 without having queued the request, so the router offers it to the variant's other
replicas and, when every one is full, answers ``ThrottlingException`` (HTTP 429).

Why that code: botocore's default ``legacy`` retry mode retries any 429, but its ``standard`` and
``adaptive`` modes retry a 429 only when the error code is a throttling code (``botocore/retries/
standard.py``), and ``ModelNotReadyException`` — sagemaker-runtime's modeled 429 — is not one, so
``standard``-mode clients would surface overload as a hard failure. ``ThrottlingException`` is
retried by all three modes, and ``adaptive`` mode slows its send rate on it: the behaviour we want
from a client that is overloading an endpoint. SageMaker itself answers throttled invocations
with ``ThrottlingException``. ``ModelNotReadyException`` keeps its own meaning (a model still loading).
"""

from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from neurondock_platform.dataplane import metrics as m
from neurondock_platform.dataplane.client import (
    OnChunk,
    ReplicaCaller,
    ReplicaTimeout,
    ReplicaUnavailable,
    StreamInterrupted,
)
from neurondock_platform.dataplane.invocation_errors import InvocationTrace
from neurondock_platform.dataplane.routing import (
    SUSPECT_SECONDS,
    EndpointRoute,
    ReplicaRoute,
    RoutingTable,
    VariantRoute,
)
from neurondock_platform.errors import RuntimeApiError, RuntimeValidationError, ServiceUnavailable

QUEUE_FULL = 429


class ThrottlingError(RuntimeApiError):
    """Every replica of the variant refused the request because its job queue was full."""

    code = "ThrottlingException"
    http_status = 429
    fmt = (
        "Rate exceeded: every replica of variant {variant} of endpoint {endpoint} has a full queue "
        "({detail}). Retry with backoff, or add instances."
    )


# Made once per request: not frozen, as a frozen dataclass's __init__ costs ~0.6 µs more here.
@dataclass(slots=True)
class RoutedAnswer:
    """A replica's answer and where it came from."""

    variant: str
    replica_id: int
    meta: dict[str, Any]
    body: bytes
    # ModelLatency as SageMaker defines it: the model's time as viewed from the router.
    model_latency_us: int = 0
    instances: int = 1
    # A streamed answer: how many parts went to ``on_chunk`` before this final frame.
    parts: int = 0


class Router:
    """Routes one invocation to a replica, moving to another replica if the first one dies."""

    def __init__(
        self,
        table: RoutingTable,
        caller: ReplicaCaller,
        max_attempts: int = 3,
        metrics: m.MetricsCollector | None = None,
    ) -> None:
        self.table = table
        self.caller = caller
        self.max_attempts = max_attempts
        self.metrics = metrics
        self.outstanding: dict[int, int] = defaultdict(int)
        # Replica id → its job queue's size, from its answers (docs/runtime.md, "Queue bounds").
        self.queue_limits: dict[int, int] = {}
        # Replicas holding as many of this router's requests as their job queue takes.
        self.full: set[int] = set()
        # Replica id → (channel key of the process that timed out, until when it is avoided): no new
        # request until a new process serves it (the replica ends itself, the agent restarts it), or
        # for routing.SUSPECT_SECONDS at most, unlike the table's suspects, which a variant keeps when
        # it has no other replica.
        self._suspects: dict[int, tuple[str, float]] = {}
        self._rng = random.Random()

    def choose_variant(self, route: EndpointRoute, target_variant: str | None) -> VariantRoute:
        """TargetVariant wins; otherwise a weighted choice among variants that have replicas."""
        if target_variant:
            variant = route.variant(target_variant)
            if variant is None:
                raise RuntimeValidationError(
                    f"Variant {target_variant} not found for endpoint {route.name}. Variants: "
                    f"{', '.join(v.name for v in route.variants)}."
                )
            return variant
        variants = route.variants
        if len(variants) == 1 and variants[0].replicas:
            return variants[0]  # the weighted choice below picks it whatever its weight
        candidates = [v for v in variants if v.replicas and v.weight > 0]
        if not candidates:
            candidates = [v for v in route.variants if v.replicas]
        if not candidates:
            raise ServiceUnavailable(f"Endpoint {route.name} has no replica ready to serve; retry shortly.")
        if len(candidates) == 1:
            return candidates[0]
        total = sum(v.weight for v in candidates)
        if total <= 0:
            return self._rng.choice(candidates)
        pick = self._rng.uniform(0, total)
        for v in candidates:
            pick -= v.weight
            if pick <= 0:
                return v
        return candidates[-1]

    def saturated(self, routes: list[EndpointRoute]) -> bool:
        """Whether every replica of every one of these routes holds a full job queue of this router's requests.

        Checked before a request's body is read, so that an overloaded endpoint refuses without reading,
        hashing and forwarding a body it would refuse anyway. A replica whose limit this router has not
        learned yet, or a route with no replica, is never saturated: the replica decides.
        """
        if not routes:
            return False
        limits, outstanding = self.queue_limits, self.outstanding
        for route in routes:
            if not route.servable or not route.variants:
                return False
            for variant in route.variants:
                if not variant.replicas:
                    return False
                for replica in variant.replicas:
                    limit = limits.get(replica.replica_id)
                    if limit is None or outstanding[replica.replica_id] < limit:
                        return False
        return True

    def _suspect(self, replica: ReplicaRoute) -> bool:
        entry = self._suspects.get(replica.replica_id)
        if entry is None:
            return False
        key, until = entry
        if key == replica.channel_key and time.monotonic() < until:
            return True
        del self._suspects[replica.replica_id]
        return False

    def choose_replica(self, variant: VariantRoute, exclude: set[int]) -> ReplicaRoute | None:
        """Least outstanding requests, ties broken at random; never one that just timed out."""
        replicas = variant.replicas
        if len(replicas) == 1:
            only = replicas[0]
            if only.replica_id in exclude or (self._suspects and self._suspect(only)):
                return None
            return only
        options = [r for r in replicas if r.replica_id not in exclude and not (self._suspects and self._suspect(r))]
        if not options:
            return None
        low = min(self.outstanding[r.replica_id] for r in options)
        best = [r for r in options if self.outstanding[r.replica_id] == low]
        return best[0] if len(best) == 1 else self._rng.choice(best)

    def _record(
        self,
        key: m.VariantKey,
        outcome: str,
        instances: int,
        started: float | None,
        model_us: float | None,
        first_part_us: float | None = None,
    ) -> None:
        if self.metrics is None:
            return
        total = (time.perf_counter() - started) * 1e6 if started is not None and model_us is not None else None
        self.metrics.invocation(
            key, outcome=outcome, instances=instances, total_us=total, model_us=model_us, first_part_us=first_part_us
        )

    async def invoke(
        self,
        route: EndpointRoute,
        target_variant: str | None,
        meta: dict[str, Any],
        body: bytes,
        timeout: float,
        *,
        started: float | None = None,
        trace: InvocationTrace | None = None,
        on_chunk: OnChunk | None = None,
        following: int = 0,
    ) -> RoutedAnswer:
        """Send the request; a replica lost mid-flight or with a full queue is tried on another one.

        ``started`` (a ``time.perf_counter()`` reading taken when the request arrived) lets the
        metrics split the request's time into ModelLatency and OverheadLatency; ``trace`` receives
        the variant and the replica last tried, for the record of a failure. With ``on_chunk`` the
        replica may stream: each part goes there as it arrives, and once one has gone out the request
        is never retried elsewhere (``StreamInterrupted``). ``following``: how many more requests from
        the same caller for the endpoint the front door is still reading, the company a batching
        replica may wait for.
        """
        tried: set[int] = set()
        lost = 0
        last_error: Exception | None = None
        full: list[dict[str, Any]] = []
        variant = self.choose_variant(route, target_variant)
        key = (route.account_id, route.name, variant.name)
        outstanding, limits = self.outstanding, self.queue_limits
        if trace is not None:
            trace.variant_name = variant.name
        failed_at = 0.0
        while lost < self.max_attempts:
            replica = self.choose_replica(variant, tried)
            if replica is None and not full and failed_at:
                # Every known replica failed: read a table loaded after that, which holds the
                # replacements an update, a scale-out or the host agent started meanwhile (the cached
                # one may be a refresh behind, longer on a loaded machine).
                fresh = await self.table.get_fresh(route.account_id, route.name, newer_than=failed_at)
                fresh_variant = fresh.variant(variant.name) if fresh else None
                if fresh_variant is not None:
                    variant = fresh_variant
                    replica = self.choose_replica(variant, tried)
            if replica is None:
                break
            rid = replica.replica_id
            tried.add(rid)
            if trace is not None:
                trace.replica_id = rid
            held = outstanding[rid] = outstanding[rid] + 1
            if held >= limits.get(rid, sys.maxsize):
                self.full.add(rid)
            # The replica may skip its model-thread hand-off for a request with no company coming, and
            # a replica with a batch delay may wait a little longer for requests already on their way:
            # this replica's share of those the front door holds for the endpoint (docs/runtime.md,
            # "Batching").
            meta["outstanding"] = held
            if following:
                meta["following"] = -(-following // len(variant.replicas))
            else:
                meta.pop("following", None)
            sent = time.perf_counter()
            part = _PartClock(sent, on_chunk, variant.name) if on_chunk is not None else None
            try:
                answer_meta, answer_body = await self.caller.call(
                    replica.address, meta, body, timeout, key=replica.channel_key, on_chunk=part
                )
            except StreamInterrupted:
                self.table.invalidate_replica(rid)
                self._record(key, m.SERVER_ERROR, variant.instance_count, None, None)
                raise
            except ReplicaUnavailable as exc:
                last_error = exc
                lost += 1
                failed_at = time.monotonic()
                self.table.invalidate_replica(rid)
                continue
            except ReplicaTimeout:
                # This one timed out; the requests queued behind it go to other replicas right away.
                self._suspects[rid] = (replica.channel_key, time.monotonic() + SUSPECT_SECONDS)
                self.table.invalidate_replica(rid)
                self.caller.abandon(replica.address, replica.channel_key)
                self._record(key, m.SERVER_ERROR, variant.instance_count, None, None)
                if self.metrics is not None:
                    self.metrics.replica_timeout(key, rid)
                raise
            finally:
                outstanding[rid] -= 1
                if self.full and outstanding[rid] < limits.get(rid, sys.maxsize):
                    self.full.discard(rid)
            rtt_us = int((time.perf_counter() - sent) * 1e6)
            limit = answer_meta.get("queue_limit")
            if limit:
                limits[rid] = int(limit)
            if self.metrics is not None:
                self.metrics.replica_answer(key, rid, answer_meta, rtt_us)
            status = answer_meta.get("status", 500)
            if status == QUEUE_FULL:
                # Refused before it was queued: nothing ran, so another replica may take it.
                full.append(answer_meta)
                continue
            if answer_meta.get("retry"):
                # A draining replica (stopped by an update or scale-in) refused it unexecuted.
                last_error = ReplicaUnavailable(str(answer_meta.get("message") or "replica is draining"))
                failed_at = time.monotonic()
                self.table.invalidate_replica(rid)
                continue
            outcome = m.OK if status == 200 else m.CLIENT_ERROR if 400 <= status < 500 else m.SERVER_ERROR
            parts = part.parts if part is not None else 0
            first_us = part.first_us if part is not None and part.parts else None
            instances = variant.instance_count
            self._record(key, outcome, instances, started, rtt_us, first_us)
            return RoutedAnswer(variant.name, rid, answer_meta, answer_body, rtt_us, instances, parts)
        if trace is not None:
            trace.replica_id = None  # no one replica failed it: all were full, lost or draining
        if full:
            self._record(key, m.THROTTLED, variant.instance_count, None, None)
            depth = max(int(a.get("queue_depth") or 0) for a in full)
            limit = max(int(a.get("queue_limit") or 0) for a in full)
            raise ThrottlingError(
                variant=variant.name,
                endpoint=route.name,
                detail=f"job queue full: {depth} of {limit} requests outstanding",
            )
        self._record(key, m.SERVER_ERROR, variant.instance_count, None, None)
        raise ServiceUnavailable(
            f"No replica of variant {variant.name} of endpoint {route.name} could take the request"
            + (f" ({last_error})" if last_error else "")
            + "; retry shortly."
        )


class _PartClock:
    """Passes streamed parts on, noting how many and when the first came (ModelLatency to the first byte)."""

    __slots__ = ("first_us", "on_chunk", "parts", "sent", "variant")

    def __init__(self, sent: float, on_chunk: OnChunk, variant: str) -> None:
        self.sent = sent
        self.on_chunk = on_chunk
        self.variant = variant
        self.parts = 0
        self.first_us = 0

    async def __call__(self, meta: dict[str, Any], body: bytes) -> None:
        if not self.parts:
            self.first_us = int((time.perf_counter() - self.sent) * 1e6)
            meta["variant"] = self.variant
        self.parts += 1
        await self.on_chunk(meta, body)
