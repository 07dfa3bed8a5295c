"""Endpoint metric time series: write the data plane's period summaries, read them back for charts.

The data plane flushes one row per (endpoint, variant, metric[, replica]) every ~10 s; ``series``
re-aggregates those rows into the caller's period the way CloudWatch's GetMetricStatistics does
(Sum, SampleCount, Average, Minimum, Maximum), plus p50 and p99. Percentiles cannot be merged
exactly from summaries: across rows p50 is the sample-weighted mean of the rows' p50 and p99 the
largest row p99 (an upper bound). Periods with no data have no datapoint, as in CloudWatch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from neurondock_platform.errors import ValidationException
from neurondock_platform.models import MetricPoint

# SageMaker's endpoint metrics (names and units verbatim) and neurondock's additions.
METRIC_UNITS: dict[str, str] = {
    "Invocations": "Count",
    "InvocationsPerInstance": "None",
    "Invocation4XXErrors": "Count",
    "Invocation5XXErrors": "Count",
    "ModelLatency": "Microseconds",
    "OverheadLatency": "Microseconds",
    "ModelSetupTime": "Microseconds",
    "InvocationsThrottled": "Count",
    "QueueDepth": "Count",
    "BatchSize": "Count",
    "NeuronCoreUtilization": "Percent",
}
MIN_PERIOD = 10
MAX_DATAPOINTS = 1440


@dataclass
class Datapoint:
    """One period of one metric, CloudWatch-style."""

    timestamp: dt.datetime
    sample_count: int
    sum: float
    minimum: float | None
    maximum: float | None
    p50: float | None
    p99: float | None
    unit: str
    buckets: dict[str, int] = field(default_factory=dict)

    @property
    def average(self) -> float:
        return self.sum / self.sample_count if self.sample_count else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the datapoint with CloudWatch's member names (plus p50, p99 and Buckets)."""
        out: dict[str, Any] = {
            "Timestamp": self.timestamp,
            "SampleCount": self.sample_count,
            "Sum": self.sum,
            "Average": self.average,
            "Minimum": self.minimum,
            "Maximum": self.maximum,
            "p50": self.p50,
            "p99": self.p99,
            "Unit": self.unit,
        }
        if self.buckets:
            out["Buckets"] = dict(self.buckets)
        return out


def write_points(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert period summaries as produced by ``dataplane.metrics.MetricsCollector.take_period``."""
    if rows:
        session.execute(insert(MetricPoint), list(rows))


def prune(session: Session, before: dt.datetime) -> int:
    """Delete points older than ``before``; returns how many went."""
    result = session.execute(delete(MetricPoint).where(MetricPoint.period_start < before))
    return int(getattr(result, "rowcount", 0) or 0)


def list_metrics(session: Session, account_id: str, endpoint_name: str) -> list[tuple[str, str]]:
    """Return the (metric, variant) pairs an endpoint has points for."""
    rows = session.execute(
        select(MetricPoint.metric, MetricPoint.variant_name)
        .where(MetricPoint.account_id == account_id, MetricPoint.endpoint_name == endpoint_name)
        .distinct()
        .order_by(MetricPoint.metric, MetricPoint.variant_name)
    ).all()
    return [(str(m), str(v)) for m, v in rows]


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def series(
    session: Session,
    account_id: str,
    endpoint_name: str,
    metric: str,
    start: dt.datetime,
    end: dt.datetime,
    period: int,
    *,
    variant_name: str | None = None,
    replica_id: int | None = None,
) -> list[Datapoint]:
    """Return one datapoint per ``period`` seconds in [start, end) that has data, oldest first.

    ``variant_name`` narrows to one variant (all variants add up otherwise); ``replica_id`` to one
    replica for per-replica metrics (NeuronCoreUtilization averages over replicas otherwise).

    Raises:
        ValidationException: an unknown metric, a period under 10 s or not a multiple of 10, an
            empty range, or more than 1,440 datapoints (CloudWatch's limit).
    """
    if metric not in METRIC_UNITS:
        raise ValidationException(f"Unknown metric {metric!r}; known: {', '.join(METRIC_UNITS)}.")
    if period < MIN_PERIOD or period % MIN_PERIOD:
        raise ValidationException(f"The period must be a multiple of {MIN_PERIOD} seconds, got {period}.")
    start, end = _aware(start), _aware(end)
    if end <= start:
        raise ValidationException("The end time must be after the start time.")
    if (end - start).total_seconds() / period > MAX_DATAPOINTS:
        raise ValidationException(f"At most {MAX_DATAPOINTS} datapoints per call; use a longer period.")
    query = select(MetricPoint).where(
        MetricPoint.account_id == account_id,
        MetricPoint.endpoint_name == endpoint_name,
        MetricPoint.metric == metric,
        MetricPoint.period_start >= start,
        MetricPoint.period_start < end,
    )
    if variant_name is not None:
        query = query.where(MetricPoint.variant_name == variant_name)
    if replica_id is not None:
        query = query.where(MetricPoint.replica_id == replica_id)
    buckets: dict[int, list[MetricPoint]] = {}
    for point in session.scalars(query.order_by(MetricPoint.period_start)):
        index = int((_aware(point.period_start) - start).total_seconds() // period)
        buckets.setdefault(index, []).append(point)
    out = []
    for index in sorted(buckets):
        points = buckets[index]
        count = sum(p.count for p in points)
        minima = [p.minimum for p in points if p.minimum is not None]
        maxima = [p.maximum for p in points if p.maximum is not None]
        p50s = [(p.p50, p.count) for p in points if p.p50 is not None]
        p99s = [p.p99 for p in points if p.p99 is not None]
        weight = sum(c for _, c in p50s)
        histogram: dict[str, int] = {}
        for p in points:
            for k, v in (p.buckets or {}).items():
                # Histograms (BatchSize) merge; other annotations (a utilization's source) do not.
                if isinstance(v, int | float) and not isinstance(v, bool):
                    histogram[k] = histogram.get(k, 0) + int(v)
        out.append(
            Datapoint(
                timestamp=start + dt.timedelta(seconds=index * period),
                sample_count=count,
                sum=sum(p.sum for p in points),
                minimum=min(minima) if minima else None,
                maximum=max(maxima) if maxima else None,
                p50=sum(v * c for v, c in p50s) / weight if weight else None,
                p99=max(p99s) if p99s else None,
                unit=METRIC_UNITS[metric],
                buckets=histogram,
            )
        )
    return out
