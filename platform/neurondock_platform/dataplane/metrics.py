"""Endpoint metrics, collected in memory on the invocation path and exposed two ways.

Names and units are SageMaker's (docs/sagemaker-api.md, "Endpoint metrics"): ``Invocations``, ``InvocationsPerInstance``
(each request adds 1/instance count), ``Invocation4XXErrors``, ``Invocation5XXErrors``,
``ModelLatency`` and ``OverheadLatency`` in microseconds, ``ModelSetupTime`` in microseconds (from
``Replica.setup_seconds``). As on SageMaker, ``ModelLatency`` is the time the model took *as viewed
from the router* (sending the request to the replica, its queue, the execution and the answer's way
back) and ``OverheadLatency`` is everything else the platform spent (authentication, routing, HTTP).
Beside them: ``InvocationsThrottled`` (a full queue refused the request), ``QueueDepth`` (requests
ahead in the replica on arrival), ``BatchSize`` (one observation per execution) and
``NeuronCoreUtilization`` per replica (projected device busy time over wall time for a compiled
Inferentia model, else measured execution time; in percent) and ``ReplicaInferenceStats`` per replica
(neuron-monitor's inference summary, ``dataplane/replica_stats.py``). A streamed answer's ModelLatency
runs to its last part; ``ModelLatencyToFirstByte`` measures it to the first (docs/streaming.md). Failed invocations
themselves (time, status, code, message, request id) go to ``errors`` (``dataplane/invocation_errors.py``).

Recording costs a few dictionary updates and no I/O. ``GET /metrics`` renders the Prometheus text
format from the running totals; a flusher writes each period's aggregate (sample count, sum,
extremes, a percentile sketch, and bucket counts for BatchSize) to the metric store
(``services/metrics.py``) in CloudWatch's namespaces and dimensions (``sagemaker_metrics.py``), and
the failures kept since the last flush to ``invocation_errors`` in the same transaction. Periods are
aligned to the wall clock (every 10 s at :00, :10, …) so a period never straddles the minute the
CloudWatch API and the alarms read it in; SageMaker publishes nothing for a variant without traffic,
and neither does this.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from neurondock_platform import sagemaker_metrics as sm
from neurondock_platform.dataplane import replica_stats
from neurondock_platform.dataplane.invocation_errors import FailedInvocation, InvocationErrorLog
from neurondock_platform.dataplane.looptask import LoopTask
from neurondock_platform.sagemaker_metrics import aligned_interval
from neurondock_platform.sketch import Sketch

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
FLUSH_SECONDS = 10


class Distribution:
    """Running Prometheus histogram plus this period's sum, count, extremes and percentile sketch."""

    __slots__ = ("_float_bounds", "bounds", "count", "counts", "p_count", "p_max", "p_min", "p_sketch", "p_sum", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        # The values observed are floats: float bounds compare with them without a conversion (twice as fast).
        self._float_bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0
        self.p_sum = 0.0
        self.p_count = 0
        self.p_min = float("inf")
        self.p_max = float("-inf")
        self.p_sketch = Sketch()

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._float_bounds, value)] += 1
        self.sum += value
        self.count += 1
        self.p_sum += value
        self.p_count += 1
        if value < self.p_min:
            self.p_min = value
        if value > self.p_max:
            self.p_max = value
        self.p_sketch.add(value)

    def take_period(self) -> dict[str, Any] | None:
        """Return this period's aggregate and start the next period; None when nothing was observed."""
        if not self.p_count:
            return None
        summary = {
            "sum": self.p_sum,
            "sample_count": self.p_count,
            "minimum": self.p_min,
            "maximum": self.p_max,
            "sketch": self.p_sketch.to_json(),
        }
        self.p_sum, self.p_count, self.p_sketch = 0.0, 0, Sketch()
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


def _ones(count: int) -> dict[str, Any]:
    # Invocations: one sample of 1 per request (Sum = SampleCount = requests).
    return {
        "sample_count": count,
        "sum": float(count),
        "minimum": 1.0,
        "maximum": 1.0,
        "sketch": Sketch.of([(1.0, count)]).to_json(),
    }


def _zero_ones(count: int, hits: int) -> dict[str, Any]:
    # Error metrics: one sample per request, 1 when it failed that way and 0 otherwise (Average = rate).
    return {
        "sample_count": count,
        "sum": float(hits),
        "minimum": 0.0 if hits < count else 1.0,
        "maximum": 1.0 if hits else 0.0,
        "sketch": Sketch.of([(0.0, count - hits), (1.0, hits)]).to_json(),
    }


@dataclass
class VariantMetrics:
    invocations: Counter = field(default_factory=Counter)
    per_instance: Counter = field(default_factory=Counter)
    errors_4xx: Counter = field(default_factory=Counter)
    errors_5xx: Counter = field(default_factory=Counter)
    throttled: Counter = field(default_factory=Counter)
    model_latency: Distribution = field(default_factory=lambda: Distribution(LATENCY_BUCKETS))
    overhead_latency: Distribution = field(default_factory=lambda: Distribution(LATENCY_BUCKETS))
    first_part_latency: Distribution = field(default_factory=lambda: Distribution(LATENCY_BUCKETS))
    setup_time: Distribution = field(default_factory=lambda: Distribution(LATENCY_BUCKETS))
    queue_depth: Distribution = field(default_factory=lambda: Distribution(QUEUE_BUCKETS))
    batch_size: Distribution = field(default_factory=lambda: Distribution(BATCH_BUCKETS))
    batch_period: dict[int, int] = field(default_factory=dict)
    # Requests per instance count this period: InvocationsPerInstance's samples are 1/count each.
    instances_period: dict[int, int] = field(default_factory=dict)
    # Data Capture records written, and lost by reason (dataplane/capture.py).
    capture_written: Counter = field(default_factory=Counter)
    capture_failed: dict[str, Counter] = field(default_factory=dict)
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
    # utilization falls back to measured execution time (docs/neuron-tools.md: the real tool counts device time).
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

    def __init__(self, source: str | None = None, resolution: float = FLUSH_SECONDS) -> None:
        self.source = source or f"{socket.gethostname()}:{os.getpid()}"[:64]
        # Seconds per stored period; the flusher sets it to its (aligned) interval.
        self.resolution = aligned_interval(resolution)
        self.variants: dict[VariantKey, VariantMetrics] = {}
        self.replicas: dict[int, ReplicaMetrics] = {}
        # (replica id, channel key) of the replica starts already observed: SQLite reuses the id of a
        # deleted row, and a restarted process keeps its row but gets a new channel key.
        self._setup_seen: set[tuple[int, str]] = set()
        self._live_replicas: set[int] | None = None
        # Each routed variant's running instance count, as last seen (the InstanceCount series).
        self._instances: dict[VariantKey, int] = {}
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
        first_part_us: float | None = None,
    ) -> None:
        """Count one request routed to a variant; latencies when the model answered (and streamed)."""
        stats = self._variant(key)
        stats.last_seen = time.monotonic()
        stats.invocations.add()
        instances = max(1, instances)
        stats.per_instance.add(1.0 / instances)
        seen = stats.instances_period
        seen[instances] = seen.get(instances, 0) + 1
        if outcome == CLIENT_ERROR:
            stats.errors_4xx.add()
        elif outcome == SERVER_ERROR:
            stats.errors_5xx.add()
        elif outcome == THROTTLED:
            stats.throttled.add()
        if model_us is not None and total_us is not None:
            stats.model_latency.observe(float(model_us))
            stats.overhead_latency.observe(max(0.0, total_us - model_us))
        if first_part_us is not None:
            stats.first_part_latency.observe(first_part_us)

    def capture_written(self, key: VariantKey, count: int) -> None:
        """Count captured records written to their destination."""
        self._variant(key).capture_written.add(count)

    def capture_failed(self, key: VariantKey, count: int, reason: str) -> None:
        """Count captured records lost (queue full, write failed); the invocations themselves succeeded."""
        failed = self._variant(key).capture_failed
        counter = failed.get(reason)
        if counter is None:
            counter = failed[reason] = Counter()
        counter.add(count)

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
        """Note each replica start's ModelSetupTime once, which replicas still exist, and instance counts."""
        live: set[int] = set()
        started: set[tuple[int, str]] = set()
        counts: dict[VariantKey, int] = {}
        for (account, name), route in routes.items():
            for variant in route.variants:
                counts[(account, name, variant.name)] = variant.instances
                for replica in variant.replicas:
                    live.add(replica.replica_id)
                    start = (replica.replica_id, replica.channel_key)
                    started.add(start)
                    if start in self._setup_seen:
                        continue
                    seconds = replica.setup_seconds
                    if seconds is not None:
                        self._setup_seen.add(start)
                        self._variant((account, name, variant.name)).setup_time.observe(seconds * 1e6)
        self._setup_seen &= started  # a start no longer routed cannot come back
        self._live_replicas = live
        self._instances = counts

    # --- periods and the table ----------------------------------------------------------------------

    def take_period(self, now: float | None = None) -> list[dict[str, Any]]:
        """Aggregate the period since the last call into metric store rows and start a new one.

        The rows are stamped with the wall-clock period the last one began in (``resolution``
        seconds, aligned), which is the period the flusher closes when it runs on the boundary.
        """
        now = time.time() if now is None else now
        started = self.period_started
        self.period_started = now
        seconds = self.resolution
        period_start = dt.datetime.fromtimestamp(int(started) - int(started) % seconds, dt.UTC)
        rows: list[dict[str, Any]] = []

        def row(metric: str, dimensions: sm.Dimensions, account: str, **values: Any) -> None:
            rows.append(
                {
                    "account_id": account,
                    "namespace": sm.namespace(metric),
                    "metric_name": metric,
                    "dimensions": dimensions,
                    "period_start": period_start,
                    "period_seconds": seconds,
                    "unit": sm.unit(metric),
                    "source": self.source,
                    "minimum": None,
                    "maximum": None,
                    "sketch": None,
                    "buckets": None,
                    **values,
                }
            )

        distributions = (
            ("ModelLatency", "model_latency"),
            ("OverheadLatency", "overhead_latency"),
            ("ModelLatencyToFirstByte", "first_part_latency"),
            ("ModelSetupTime", "setup_time"),
            ("QueueDepth", "queue_depth"),
            ("BatchSize", "batch_size"),
        )
        idle_before = time.monotonic() - 6 * FLUSH_SECONDS
        for key, stats in list(self.variants.items()):
            account, endpoint, variant = key
            dims = sm.variant_dimensions(endpoint, variant)
            requests = int(stats.invocations.period)
            if requests:
                row("Invocations", dims, account, **_ones(requests))
                seen, stats.instances_period = stats.instances_period, {}
                row(
                    "InvocationsPerInstance",
                    dims,
                    account,
                    sample_count=requests,
                    sum=stats.per_instance.period,
                    minimum=1.0 / max(seen),
                    maximum=1.0 / min(seen),
                    sketch=Sketch.of((1.0 / n, c) for n, c in seen.items()).to_json(),
                )
                for metric, counter in (
                    ("Invocation4XXErrors", stats.errors_4xx),
                    ("Invocation5XXErrors", stats.errors_5xx),
                    ("InvocationsThrottled", stats.throttled),
                ):
                    row(metric, dims, account, **_zero_ones(requests, int(counter.period)))
                counters = (stats.invocations, stats.per_instance, stats.errors_4xx, stats.errors_5xx, stats.throttled)
                for counter in counters:
                    counter.period = 0.0
            written = int(stats.capture_written.period)
            failed = int(sum(c.period for c in stats.capture_failed.values()))
            for metric, count in (("DataCaptureWritten", written), ("DataCaptureFailed", failed)):
                if count:
                    row(metric, dims, account, **_ones(count))
            stats.capture_written.period = 0.0
            for counter in stats.capture_failed.values():
                counter.period = 0.0
            for metric, attr in distributions:
                dist: Distribution = getattr(stats, attr)
                summary = dist.take_period()
                if summary is not None:
                    buckets = None
                    if metric == "BatchSize":
                        buckets = {str(k): v for k, v in sorted(stats.batch_period.items())}
                        stats.batch_period = {}
                    row(metric, dims, account, buckets=buckets, **summary)
            if not requests and not written and stats.last_seen < idle_before and not self._has_replicas(key):
                del self.variants[key]
        for (account, endpoint, variant), count in self._instances.items():
            value = float(count)
            row(
                "InstanceCount",
                sm.variant_dimensions(endpoint, variant),
                account,
                sample_count=1,
                sum=value,
                minimum=value,
                maximum=value,
                sketch=Sketch.of([(value, 1)]).to_json(),
            )
        for replica_id, replica in list(self.replicas.items()):
            if self._live_replicas is not None and replica_id not in self._live_replicas:
                del self.replicas[replica_id]
                continue
            account, endpoint, variant = replica.key
            dims = sm.replica_dimensions(endpoint, variant, replica_id)
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
            single = {"sample_count": 1, "sum": value, "minimum": value, "maximum": value}
            sketch = Sketch.of([(value, 1)]).to_json()
            row("NeuronCoreUtilization", dims, account, **single, sketch=sketch, buckets={"source": source})
            inference = replica.period.row_values()
            if inference is not None:
                row(replica_stats.METRIC, dims, account, **inference)
            replica.period = replica_stats.ReplicaPeriod()
        return rows

    def _has_replicas(self, key: VariantKey) -> bool:
        return any(r.key == key for r in self.replicas.values())

    # --- Prometheus ---------------------------------------------------------------------------------

    def render(self, outstanding: Mapping[int, int] | None = None, *, account_id: str | None = None) -> bytes:
        """Return the metrics (of one account's endpoints, when given) in the Prometheus text format 0.0.4."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        variants = sorted(kv for kv in self.variants.items() if account_id is None or kv[0][0] == account_id)
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
        family("DataCaptureWritten", "counter", "Data Capture records written to the endpoint's DestinationS3Uri.")
        for key, stats in variants:
            out.append(f"DataCaptureWritten{{{_labels(key)}}} {_num(stats.capture_written.total)}")
        family(
            "DataCaptureFailed",
            "counter",
            "Data Capture records lost (reason: queue_full, write_failed); the invocations succeeded.",
        )
        for key, stats in variants:
            for reason, counter in sorted(stats.capture_failed.items()):
                out.append(f"DataCaptureFailed{{{_labels(key, reason=reason)}}} {_num(counter.total)}")
        for name, attr, help_text in (
            ("ModelLatency", "model_latency", "Microseconds the model took as viewed from the router."),
            ("OverheadLatency", "overhead_latency", "Microseconds the platform added beyond ModelLatency."),
            ("ModelLatencyToFirstByte", "first_part_latency", "Microseconds to a streamed answer's first part."),
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
        replicas = sorted(kv for kv in self.replicas.items() if account_id is None or kv[1].key[0] == account_id)
        outstanding = outstanding or {}
        gauges = (
            ("NeuronCoreUtilization", "Percent of wall time the replica's NeuronCore(s) executed, last period."),
            ("ReplicaQueueDepth", "Requests queued or executing in the replica at its last answer."),
            ("ReplicaQueueLimit", "Requests the replica's queue holds before it refuses (TS_JOB_QUEUE_SIZE)."),
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
    """Write each period's aggregate to the metric store on the wall-clock boundary, off the event loop."""

    def __init__(
        self,
        collector: MetricsCollector,
        session_factory: sessionmaker[Session],
        interval: float = FLUSH_SECONDS,
    ) -> None:
        self.collector = collector
        self.factory = session_factory
        self.interval = aligned_interval(interval)
        collector.resolution = self.interval
        self._flusher = LoopTask(self._loop)
        # Stream ids this process has resolved (streams are never deleted).
        self._streams: dict[Any, int] = {}

    def _write(self, rows: Iterable[dict[str, Any]], failures: list[FailedInvocation]) -> None:
        from neurondock_platform.services import invocation_errors
        from neurondock_platform.services import metrics as metric_service

        with self.factory() as session:
            metric_service.write_points(session, list(rows), self._streams)
            invocation_errors.write_errors(session, [f.to_row(self.collector.source) for f in failures])
            session.commit()

    async def flush(self, now: float | None = None) -> int:
        """Write the current period and the failures kept since the last flush; returns the metric rows written."""
        rows = self.collector.take_period(now)
        failures = self.collector.errors.take()
        if not rows and not failures:
            return 0
        try:
            await asyncio.to_thread(self._write, rows, failures)
        except Exception:
            # Metrics must never take serving down; the in-memory totals and /metrics carry on, and
            # the failures go back into their (bounded) rings for the next flush.
            log.exception("could not write %d metric points and %d invocation errors", len(rows), len(failures))
            self.collector.errors.restore(failures)
            self._streams.clear()
            return 0
        return len(rows)

    async def _loop(self) -> None:
        while True:
            now = time.time()
            boundary = now - now % self.interval + self.interval
            await asyncio.sleep(boundary - now)
            await self.flush(boundary)

    def start(self) -> None:
        """Start flushing on the running loop."""
        self._flusher.start()

    async def stop(self) -> None:
        """Stop the loop and write what the last period collected."""
        if await self._flusher.stop():
            await self.flush()
