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
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from neurondock_platform.dataplane import metrics as m
from neurondock_platform.dataplane.client import ReplicaCaller, ReplicaTimeout, ReplicaUnavailable
from neurondock_platform.dataplane.invocation_errors import InvocationTrace
from neurondock_platform.dataplane.routing import EndpointRoute, ReplicaRoute, RoutingTable, VariantRoute
from neurondock_platform.errors import RuntimeApiError, RuntimeValidationError, ServiceUnavailable

QUEUE_FULL = 429


class ThrottlingError(RuntimeApiError):
    """Every replica of the variant refused the request because its queue was full."""

    code = "ThrottlingException"
    http_status = 429
    fmt = (
        "Rate exceeded: every replica of variant {variant} of endpoint {endpoint} has a full queue "
        "({detail}). Retry with backoff, or add instances."
    )


@dataclass(frozen=True)
class RoutedAnswer:
    """A replica's answer and where it came from."""

    variant: str
    replica_id: int
    meta: dict[str, Any]
    body: bytes
    # ModelLatency as SageMaker defines it: the model's time as viewed from the router.
    model_latency_us: int = 0
    instances: int = 1


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
        candidates = [v for v in route.variants if v.replicas and v.weight > 0]
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

    def choose_replica(self, variant: VariantRoute, exclude: set[int]) -> ReplicaRoute | None:
        """Least outstanding requests, ties broken at random."""
        replicas = variant.replicas
        if len(replicas) == 1:
            only = replicas[0]
            return None if only.replica_id in exclude else only
        options = [r for r in replicas if r.replica_id not in exclude]
        if not options:
            return None
        low = min(self.outstanding[r.replica_id] for r in options)
        best = [r for r in options if self.outstanding[r.replica_id] == low]
        return best[0] if len(best) == 1 else self._rng.choice(best)

    def _record(
        self, key: m.VariantKey, outcome: str, instances: int, started: float | None, model_us: float | None
    ) -> None:
        if self.metrics is None:
            return
        total = (time.perf_counter() - started) * 1e6 if started is not None and model_us is not None else None
        self.metrics.invocation(key, outcome=outcome, instances=instances, total_us=total, model_us=model_us)

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
    ) -> RoutedAnswer:
        """Send the request; a replica lost mid-flight or with a full queue is tried on another one.

        ``started`` (a ``time.perf_counter()`` reading taken when the request arrived) lets the
        metrics split the request's time into ModelLatency and OverheadLatency; ``trace`` receives
        the variant and the replica last tried, for the record of a failure.
        """
        tried: set[int] = set()
        lost = 0
        last_error: Exception | None = None
        full: list[dict[str, Any]] = []
        variant = self.choose_variant(route, target_variant)
        key = (route.account_id, route.name, variant.name)
        if trace is not None:
            trace.variant_name = variant.name
        while lost < self.max_attempts:
            replica = self.choose_replica(variant, tried)
            if replica is None and not full:
                # Pick up replacements the host agent may have started meanwhile.
                fresh = await self.table.get(route.account_id, route.name)
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
            self.outstanding[rid] += 1
            # The replica may skip its model-thread hand-off for a request with no company coming.
            meta["outstanding"] = self.outstanding[rid]
            sent = time.perf_counter()
            try:
                answer_meta, answer_body = await self.caller.call(replica.address, meta, body, timeout)
            except ReplicaUnavailable as exc:
                last_error = exc
                lost += 1
                self.table.invalidate_replica(rid)
                continue
            except ReplicaTimeout:
                self._record(key, m.SERVER_ERROR, variant.instance_count, None, None)
                if self.metrics is not None:
                    self.metrics.replica_timeout(key, rid)
                raise
            finally:
                self.outstanding[rid] -= 1
            rtt_us = int((time.perf_counter() - sent) * 1e6)
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
                self.table.invalidate_replica(rid)
                continue
            outcome = m.OK if status == 200 else m.CLIENT_ERROR if 400 <= status < 500 else m.SERVER_ERROR
            self._record(key, outcome, variant.instance_count, started, rtt_us)
            return RoutedAnswer(variant.name, rid, answer_meta, answer_body, rtt_us, variant.instance_count)
        if trace is not None:
            trace.replica_id = None  # no one replica failed it: all were full, lost or draining
        if full:
            self._record(key, m.THROTTLED, variant.instance_count, None, None)
            depth = max(int(a.get("queue_depth") or 0) for a in full)
            limit = max(int(a.get("queue_limit") or 0) for a in full)
            raise ThrottlingError(
                variant=variant.name,
                endpoint=route.name,
                detail=f"NRT_QUEUE_FULL: {depth} of {limit} requests outstanding",
            )
        self._record(key, m.SERVER_ERROR, variant.instance_count, None, None)
        raise ServiceUnavailable(
            f"No replica of variant {variant.name} of endpoint {route.name} could take the request"
            + (f" ({last_error})" if last_error else "")
            + "; retry shortly."
        )
