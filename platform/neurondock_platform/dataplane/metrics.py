"""Endpoint metrics, collected in memory on the invocation path and exposed two ways.

Names and units are SageMaker's (serving-peers.md §1.2): ``Invocations``, ``InvocationsPerInstance``
(each request adds 1/instance count), ``Invocation4XXErrors``, ``Invocation5XXErrors``,
``ModelLatency`` and ``OverheadLatency`` in microseconds, ``ModelSetupTime`` in microseconds (from
``Replica.setup_seconds``). As on SageMaker, ``ModelLatency`` is the time the model took *as viewed
from the router* (sending the request to the replica, its queue, the execution and the answer's way
back) and ``OverheadLatency`` is everything else the platform spent (authentication, routing, HTTP).
Beside them: ``InvocationsThrottled`` (a full queue refused the request), ``QueueDepth`` (requests
ahead in the replica on arrival), ``BatchSize`` (one observation per execution) and
``NeuronCoreUtilization`` per replica (projected device busy time over wall time for a compiled
Inferentia model, else measured execution time; in percent) and ``ReplicaInferenceStats`` per replica
(neuron-monitor's inference summary, ``dataplane/replica_stats.py``). Failed invocations
themselves (time, status, code, message, request id) go to ``errors`` (``dataplane/invocation_errors.py``).

Recording costs a few dictionary updates and no I/O. ``GET /metrics`` renders the Prometheus text
format from the running totals; a flusher writes each ~10 s period's summary (sum, count, min, max,
p50, p99, and bucket counts for BatchSize) to ``metric_points`` through ``services/metrics.py``, and
the failures kept since the last flush to ``invocation_errors`` in the same transaction.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import logging
import os
import random
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from neurondock_platform.dataplane import replica_stats
from neurondock_platform.dataplane.invocation_errors import FailedInvocation, InvocationErrorLog
from neurondock_platform.dataplane.quantiles import percentile

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from neurondock_platform.dataplane.routing import EndpointRoute, RouteKey

log = logging.getLogger(__name__)

VariantKey = tuple[str, str, str]  # account id, endpoint name, variant name

OK = "ok"
CLIENT_ERROR = "4xx"
SERVER_ERROR = "5xx"
THROTTLED = "throttled"

MICROSECONDS = "Microseconds"
COUNT = "Count"
PERCENT = "Percent"
NONE = "None"

# Prometheus buckets: latencies in µs from 100 µs to 60 s; batch sizes in powers of two.
LATENCY_BUCKETS = (
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 60_000_000,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
QUEUE_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128)
# Samples kept per distribution per period for p50/p99 (reservoir sampling beyond that).
RESERVOIR = 2048
FLUSH_SECONDS = 10


class Distribution:
    """Running Prometheus histogram plus this period's sum, count, extremes and a sample reservoir."""

    __slots__ = ("bounds", "count", "counts", "p_count", "p_max", "p_min", "p_samples", "p_sum", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0
        self.p_sum = 0.0
        self.p_count = 0
        self.p_min = float("inf")
        self.p_max = float("-inf")
        self.p_samples: list[float] = []

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1
        self.p_sum += value
        self.p_count += 1
        if value < self.p_min:
            self.p_min = value
        if value > self.p_max:
            self.p_max = value
        samples = self.p_samples
        if len(samples) < RESERVOIR:
            samples.append(value)
        else:
            slot = random.randrange(self.p_count)
            if slot < RESERVOIR:
                samples[slot] = value

    def take_period(self) -> dict[str, Any] | None:
        """Return this period's summary and start the next period; None when nothing was observed."""
        if not self.p_count:
            return None
        ordered = sorted(self.p_samples)
        summary = {
            "sum": self.p_sum,
            "count": self.p_count,
            "minimum": self.p_min,
            "maximum": self.p_max,
            "p50": percentile(ordered, 0.50),
            "p99": percentile(ordered, 0.99),
        }
        self.p_sum, self.p_count, self.p_samples = 0.0, 0, []
        self.p_min, self.p_max = float("inf"), float("-inf")
        return summary


@dataclass
class Counter:
    """A running total and this period's part of it."""

    total: float = 0.0
    period: float = 0.0

    def add(self, value: float = 1.0) -> None:
        self.total += value
        self.period += value


@dataclass
class VariantMetrics:
    invocations: Counter = field(default_factory=Counter)
    per_instance: Counter = field(default_factory=Counter)
    errors_4xx: Counter = field(default_factory=Counter)
    errors_5xx: Counter = field(default_factory=Counter)
    throttled: Counter = field(default_factory=Counter)
    model_latency: Distribution = field(default_factory=lambda: Distribution(LATENCY_BUCKETS))
    overhead_latency: Distribution = field(default_factory=lambda: Distribution(LATENCY_BUCKETS))
    setup_time: Distribution = field(default_factory=lambda: Distribution(LATENCY_BUCKETS))
    queue_depth: Distribution = field(default_factory=lambda: Distribution(QUEUE_BUCKETS))
    batch_size: Distribution = field(default_factory=lambda: Distribution(BATCH_BUCKETS))
    batch_period: dict[int, int] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)


@dataclass
class ReplicaMetrics:
    key: VariantKey
    busy_us: int = 0
    queue_depth: int = 0
    queue_limit: int = 0
    executions: int = 0
    failed_to_queue: int = 0
    snap_busy_us: int = 0
    snap_time: float = field(default_factory=time.monotonic)
    utilization: float = 0.0
    # Projected device time (compiled Inferentia models) when the replica reports it; else None and
    # utilization falls back to measured execution time (inferentia.md §7.3 prefers the former).
    device_busy_us: int | None = None
    snap_device_busy_us: int = 0
    period: replica_stats.ReplicaPeriod = field(default_factory=replica_stats.ReplicaPeriod)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(key: VariantKey, **extra: str) -> str:
    account, endpoint, variant = key
    parts = [
        f'account_id="{_label(account)}"',
        f'EndpointName="{_label(endpoint)}"',
        f'VariantName="{_label(variant)}"',
    ]
    parts += [f'{k}="{_label(v)}"' for k, v in extra.items()]
    return ",".join(parts)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class MetricsCollector:
    """In-memory metrics of one API process; every method runs on the event loop."""

    def __init__(self, source: str | None = None) -> None:
        self.source = source or f"{socket.gethostname()}:{os.getpid()}"[:64]
        self.variants: dict[VariantKey, VariantMetrics] = {}
        self.replicas: dict[int, ReplicaMetrics] = {}
        self._setup_seen: set[int] = set()
        self._live_replicas: set[int] | None = None
        self.period_started = time.time()
        self.errors = InvocationErrorLog()

    def _variant(self, key: VariantKey) -> VariantMetrics:
        stats = self.variants.get(key)
        if stats is None:
            stats = self.variants[key] = VariantMetrics()
        return stats

    # --- recording --------------------------------------------------------------------------------

    def invocation(
        self,
        key: VariantKey,
        *,
        outcome: str,
        instances: int,
        total_us: float | None = None,
        model_us: float | None = None,
    ) -> None:
        """Count one request routed to a variant; latencies when the model answered."""
        stats = self._variant(key)
        stats.last_seen = time.monotonic()
        stats.invocations.add()
        stats.per_instance.add(1.0 / max(1, instances))
        if outcome == CLIENT_ERROR:
            stats.errors_4xx.add()
        elif outcome == SERVER_ERROR:
            stats.errors_5xx.add()
        elif outcome == THROTTLED:
            stats.throttled.add()
        if model_us is not None and total_us is not None:
            stats.model_latency.observe(model_us)
            stats.overhead_latency.observe(max(0.0, total_us - model_us))

    def replica_answer(
        self, key: VariantKey, replica_id: int, meta: Mapping[str, Any], rtt_us: float | None = None
    ) -> None:
        """Take the replica's queue, batch and busy figures from one answer's meta."""
        replica = self._replica(key, replica_id, meta)
        replica.period.answer(int(meta.get("status") or 500), meta, rtt_us)
        device_busy = meta.get("device_busy_us")
        if device_busy is not None:
            device_busy = int(device_busy)
            if replica.device_busy_us is None or device_busy < replica.device_busy_us:
                replica.snap_device_busy_us = 0 if replica.device_busy_us is not None else device_busy
            replica.device_busy_us = device_busy
        stats = self._variant(key)
        depth = meta.get("queue_depth")
        if depth is not None:
            replica.queue_depth = int(depth)
            if meta.get("status") != 429:
                stats.queue_depth.observe(float(depth))
        busy = meta.get("busy_us")
        if busy is not None:
            busy = int(busy)
            if busy < replica.busy_us:  # the replica restarted: its counters began again
                replica.snap_busy_us = 0
            replica.busy_us = busy
        replica.queue_limit = int(meta.get("queue_limit") or replica.queue_limit)
        replica.executions = int(meta.get("executions") or replica.executions)
        replica.failed_to_queue = int(meta.get("failed_to_queue") or replica.failed_to_queue)
        size = meta.get("batch_size")
        if size and meta.get("batch_index") == 0:
            stats.batch_size.observe(float(size))
            stats.batch_period[int(size)] = stats.batch_period.get(int(size), 0) + 1

    def _replica(self, key: VariantKey, replica_id: int, meta: Mapping[str, Any]) -> ReplicaMetrics:
        replica = self.replicas.get(replica_id)
        if replica is None or replica.key != key:
            replica = self.replicas[replica_id] = ReplicaMetrics(key)
            replica.snap_busy_us = int(meta.get("busy_us") or 0)
        return replica

    def replica_timeout(self, key: VariantKey, replica_id: int) -> None:
        """Count a request the replica did not answer in time (neuron-monitor's ``timed_out``)."""
        self._replica(key, replica_id, {}).period.timeout()

    def observe_routes(self, routes: Mapping[RouteKey, EndpointRoute]) -> None:
        """Note each replica's ModelSetupTime once, and which replicas still exist."""
        live: set[int] = set()
        for (account, name), route in routes.items():
            for variant in route.variants:
                for replica in variant.replicas:
                    live.add(replica.replica_id)
                    if replica.replica_id in self._setup_seen:
                        continue
                    seconds = replica.setup_seconds
                    if seconds is not None:
                        self._setup_seen.add(replica.replica_id)
                        self._variant((account, name, variant.name)).setup_time.observe(seconds * 1e6)
        self._live_replicas = live

    # --- periods and the table ----------------------------------------------------------------------

    def take_period(self, now: float | None = None) -> list[dict[str, Any]]:
        """Summarise the period since the last call as ``metric_points`` rows and start a new one."""
        now = time.time() if now is None else now
        started = self.period_started
        seconds = max(1, round(now - started))
        self.period_started = now
        period_start = dt.datetime.fromtimestamp(started, dt.UTC).replace(microsecond=0)
        rows: list[dict[str, Any]] = []

        def row(key: VariantKey, metric: str, unit: str, replica_id: int | None = None, **values: Any) -> None:
            account, endpoint, variant = key
            rows.append(
                {
                    "account_id": account,
                    "endpoint_name": endpoint,
                    "variant_name": variant,
                    "replica_id": replica_id,
                    "metric": metric,
                    "period_start": period_start,
                    "period_seconds": seconds,
                    "unit": unit,
                    "source": self.source,
                    "minimum": None,
                    "maximum": None,
                    "p50": None,
                    "p99": None,
                    "buckets": None,
                    **values,
                }
            )

        counters = (
            ("Invocations", "invocations"),
            ("InvocationsPerInstance", "per_instance"),
            ("Invocation4XXErrors", "errors_4xx"),
            ("Invocation5XXErrors", "errors_5xx"),
            ("InvocationsThrottled", "throttled"),
        )
        distributions = (
            ("ModelLatency", "model_latency", MICROSECONDS),
            ("OverheadLatency", "overhead_latency", MICROSECONDS),
            ("ModelSetupTime", "setup_time", MICROSECONDS),
            ("QueueDepth", "queue_depth", COUNT),
            ("BatchSize", "batch_size", COUNT),
        )
        idle_before = time.monotonic() - 6 * FLUSH_SECONDS
        for key, stats in list(self.variants.items()):
            requests = int(stats.invocations.period)
            active = requests > 0
            if active:
                for metric, attr in counters:
                    counter: Counter = getattr(stats, attr)
                    unit = NONE if metric == "InvocationsPerInstance" else COUNT
                    row(key, metric, unit, sum=counter.period, count=requests)
                    counter.period = 0.0
            for metric, attr, unit in distributions:
                dist: Distribution = getattr(stats, attr)
                summary = dist.take_period()
                if summary is not None:
                    buckets = None
                    if metric == "BatchSize":
                        buckets = {str(k): v for k, v in sorted(stats.batch_period.items())}
                        stats.batch_period = {}
                    row(key, metric, unit, buckets=buckets, **summary)
            if not active and stats.last_seen < idle_before and not self._has_replicas(key):
                del self.variants[key]
        for replica_id, replica in list(self.replicas.items()):
            if self._live_replicas is not None and replica_id not in self._live_replicas:
                del self.replicas[replica_id]
                continue
            elapsed_us = max(1.0, (time.monotonic() - replica.snap_time) * 1e6)
            if replica.device_busy_us is not None:
                busy = max(0, replica.device_busy_us - replica.snap_device_busy_us)
                source = "projected device time"
                replica.snap_device_busy_us = replica.device_busy_us
            else:
                busy = max(0, replica.busy_us - replica.snap_busy_us)
                source = "measured execution time"
            replica.utilization = min(100.0, 100.0 * busy / elapsed_us)
            replica.snap_busy_us, replica.snap_time = replica.busy_us, time.monotonic()
            value = round(replica.utilization, 3)
            row(replica.key, "NeuronCoreUtilization", PERCENT, replica_id, sum=value, count=1,
                minimum=value, maximum=value, p50=value, p99=value, buckets={"source": source})  # fmt: skip
            inference = replica.period.row_values()
            if inference is not None:
                row(replica.key, replica_stats.METRIC, MICROSECONDS, replica_id, **inference)
            replica.period = replica_stats.ReplicaPeriod()
        return rows

    def _has_replicas(self, key: VariantKey) -> bool:
        return any(r.key == key for r in self.replicas.values())

    # --- Prometheus ---------------------------------------------------------------------------------

    def render(self, outstanding: Mapping[int, int] | None = None) -> bytes:
        """Return every metric in the Prometheus text exposition format (version 0.0.4)."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        variants = sorted(self.variants.items())
        for name, attr, help_text in (
            ("Invocations", "invocations", "Requests sent to the model (SageMaker Invocations)."),
            ("InvocationsPerInstance", "per_instance", "Invocations divided by the variant's instance count."),
            ("Invocation4XXErrors", "errors_4xx", "Requests where the model returned a 4xx status."),
            ("Invocation5XXErrors", "errors_5xx", "Requests where the model returned a 5xx status or timed out."),
            ("InvocationsThrottled", "throttled", "Requests refused with 429 because every replica's queue was full."),
        ):
            family(name, "counter", help_text)
            for key, stats in variants:
                out.append(f"{name}{{{_labels(key)}}} {_num(getattr(stats, attr).total)}")
        for name, attr, help_text in (
            ("ModelLatency", "model_latency", "Microseconds the model took as viewed from the router."),
            ("OverheadLatency", "overhead_latency", "Microseconds the platform added beyond ModelLatency."),
            ("ModelSetupTime", "setup_time", "Microseconds from a replica's start to serving."),
            ("QueueDepth", "queue_depth", "Requests ahead in the replica when a request arrived."),
            ("BatchSize", "batch_size", "Requests per model execution (one observation per execution)."),
        ):
            family(name, "histogram", help_text)
            for key, stats in variants:
                dist: Distribution = getattr(stats, attr)
                labels = _labels(key)
                cumulative = 0
                for bound, count in zip(dist.bounds, dist.counts, strict=False):
                    cumulative += count
                    out.append(f'{name}_bucket{{{labels},le="{_num(bound)}"}} {cumulative}')
                out.append(f'{name}_bucket{{{labels},le="+Inf"}} {dist.count}')
                out.append(f"{name}_sum{{{labels}}} {_num(dist.sum)}")
                out.append(f"{name}_count{{{labels}}} {dist.count}")
        replicas = sorted(self.replicas.items())
        outstanding = outstanding or {}
        gauges = (
            ("NeuronCoreUtilization", "Percent of wall time the replica's NeuronCore(s) executed, last period."),
            ("ReplicaQueueDepth", "Requests queued or executing in the replica at its last answer."),
            ("ReplicaQueueLimit", "Requests the replica's queue holds before it refuses (NRT_QUEUE_FULL)."),
            ("ReplicaOutstandingRequests", "Requests this router has in flight to the replica now."),
            ("ReplicaExecutions", "Model executions (batches) the replica has run since it started."),
            ("ReplicaFailedToQueue", "Requests the replica refused because its queue was full, since it started."),
        )
        for name, help_text in gauges:
            family(name, "gauge", help_text)
            for replica_id, replica in replicas:
                value = {
                    "NeuronCoreUtilization": replica.utilization,
                    "ReplicaQueueDepth": replica.queue_depth,
                    "ReplicaQueueLimit": replica.queue_limit,
                    "ReplicaOutstandingRequests": outstanding.get(replica_id, 0),
                    "ReplicaExecutions": replica.executions,
                    "ReplicaFailedToQueue": replica.failed_to_queue,
                }[name]
                out.append(f"{name}{{{_labels(replica.key, replica=str(replica_id))}}} {_num(value)}")
        out.append("")
        return "\n".join(out).encode()


class MetricsFlusher:
    """Write each period's summary to ``metric_points`` every ``interval`` seconds, off the event loop."""

    def __init__(
        self,
        collector: MetricsCollector,
        session_factory: sessionmaker[Session],
        interval: float = FLUSH_SECONDS,
        retention: dt.timedelta = dt.timedelta(days=15),
    ) -> None:
        self.collector = collector
        self.factory = session_factory
        self.interval = interval
        self.retention = retention
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0

    def _write(self, rows: Iterable[dict[str, Any]], failures: list[FailedInvocation], prune: bool) -> None:
        from neurondock_platform.services import invocation_errors
        from neurondock_platform.services import metrics as metric_service

        with self.factory() as session:
            metric_service.write_points(session, list(rows))
            invocation_errors.write_errors(session, [f.to_row(self.collector.source) for f in failures])
            if prune:
                metric_service.prune(session, dt.datetime.now(dt.UTC) - self.retention)
            session.commit()

    async def flush(self) -> int:
        """Write the current period and the failures kept since the last flush; returns the metric rows written."""
        rows = self.collector.take_period()
        failures = self.collector.errors.take()
        now = time.monotonic()
        prune = now - self._last_prune > 3600
        if not rows and not failures and not prune:
            return 0
        if prune:
            self._last_prune = now
        try:
            await asyncio.to_thread(self._write, rows, failures, prune)
        except Exception:
            # Metrics must never take serving down; the in-memory totals and /metrics carry on, and
            # the failures go back into their (bounded) rings for the next flush.
            log.exception("could not write %d metric points and %d invocation errors", len(rows), len(failures))
            self.collector.errors.restore(failures)
            return 0
        return len(rows)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop and write what the last period collected."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            await self.flush()
