"""Metric time series per endpoint and variant, with SageMaker's metric names, for charts and the admin API.

``metric_series`` and ``invocations_last_hour`` read the metric store (``services.metrics``), which
the data plane writes; ModelSetupTime falls back to the replicas' own setup times when the store has
none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from neurondock_platform.db import utcnow
from neurondock_platform.errors import ValidationException
from neurondock_platform.models import Endpoint
from neurondock_platform.services import metrics as metrics_store
from neurondock_platform.services.fleet import ReplicaView

# SageMaker's endpoint metric names and units, plus neurondock's additions (services.metrics).
METRICS: dict[str, str] = dict(metrics_store.METRIC_UNITS)
STATISTICS = ("Sum", "Average", "Minimum", "Maximum", "SampleCount", "p50", "p99")
STORE_SOURCE = "metrics store (period summaries flushed by the data plane)"


@dataclass(frozen=True)
class MetricQuery:
    """One time series: an endpoint's (or one variant's) metric, aggregated per period."""

    endpoint_id: int
    endpoint_name: str
    account_id: str
    variant_name: str | None
    metric: str
    statistic: str
    start: dt.datetime
    end: dt.datetime
    period_seconds: int


@dataclass
class Series:
    query: MetricQuery
    available: bool
    points: list[tuple[dt.datetime, float]] = field(default_factory=list)
    source: str | None = None
    reason: str | None = None


def _statistic(point: metrics_store.Datapoint, statistic: str) -> float | None:
    values: dict[str, float | None] = {
        "Sum": point.sum,
        "SampleCount": float(point.sample_count),
        "Average": point.average,
        "Minimum": point.minimum,
        "Maximum": point.maximum,
        "p50": point.p50,
        "p99": point.p99,
    }
    return values[statistic]


def check_metric_query(metric: str, statistic: str) -> None:
    """Raise ValidationException for an unknown metric or statistic."""
    if metric not in METRICS:
        raise ValidationException(f"Unknown metric {metric!r}; neurondock records {', '.join(METRICS)}.")
    if statistic not in STATISTICS:
        raise ValidationException(f"Unknown statistic {statistic!r}; use one of {', '.join(STATISTICS)}.")


def metric_series(session: Session, query: MetricQuery, replicas: Iterable[ReplicaView] = ()) -> Series:
    """Return a metric's points per period (periods without data have none, as in CloudWatch)."""
    check_metric_query(query.metric, query.statistic)
    datapoints = metrics_store.series(
        session,
        query.account_id,
        query.endpoint_name,
        query.metric,
        query.start,
        query.end,
        query.period_seconds,
        variant_name=query.variant_name,
    )
    points = [(p.timestamp, v) for p in datapoints if (v := _statistic(p, query.statistic)) is not None]
    if points or query.metric != "ModelSetupTime":
        return Series(query, True, points, source=STORE_SOURCE)
    if query.metric == "ModelSetupTime":
        points = [
            (r.updated_at, round(r.setup_seconds * 1e6, 1))
            for r in replicas
            if r.setup_seconds is not None
            and (query.variant_name is None or r.variant_name == query.variant_name)
            and query.start <= r.updated_at <= query.end
        ]
        return Series(
            query,
            True,
            sorted(points),
            source="replicas (one point per replica start, not aggregated)",
        )
    return Series(query, True, [], source=STORE_SOURCE)


@dataclass(frozen=True)
class Traffic:
    """Invocations an endpoint served over a window, and where the number comes from."""

    invocations_per_hour: float | None
    source: str


def invocations_last_hour(session: Session, endpoints: Sequence[Endpoint]) -> dict[int, Traffic]:
    """Return, per endpoint id, the invocations it served in the last hour and the source of the number."""
    end = utcnow()
    sums = metrics_store.endpoint_sums(
        session, "Invocations", [(e.account_id, e.name) for e in endpoints], end - dt.timedelta(hours=1), end
    )
    source = f"Invocations over the last hour ({STORE_SOURCE})"
    return {e.id: Traffic(sums.get((e.account_id, e.name), 0.0), source) for e in endpoints}
