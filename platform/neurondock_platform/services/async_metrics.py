"""Asynchronous inference's CloudWatch metrics, written to the one metric store (services/metrics.py).

Per finished request (per variant): InvocationsProcesssed or InvocationFailures, ExpiredRequests,
RequestDownloadFailures, ResponseUploadFailures, TimeInBacklog and TotalProcessingTime — written in
the transaction that records the outcome, so a request counts once however often it was delivered.
Per endpoint, sampled every flush period by the monitor: ApproximateBacklogSize, …PerInstance,
ApproximateAgeOfOldestRequest and HasBacklogWithoutCapacity (docs/async.md, "Metrics").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from neurondock_platform import sagemaker_metrics as sm
from neurondock_platform.models import AsyncInference, AsyncInferenceStatus, Endpoint, EndpointVariant
from neurondock_platform.services import async_inference, metrics
from neurondock_platform.sketch import Sketch

SOURCE = "async"


def _floor(when: dt.datetime, period: int) -> dt.datetime:
    epoch = int(when.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % period, dt.UTC)


def _row(
    account_id: str, metric: str, dimensions: sm.Dimensions, value: float, start: dt.datetime, period: int
) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "namespace": sm.namespace(metric),
        "metric_name": metric,
        "dimensions": dimensions,
        "period_start": start,
        "period_seconds": period,
        "sample_count": 1,
        "sum": value,
        "minimum": value,
        "maximum": value,
        "unit": sm.unit(metric),
        "sketch": Sketch.of([(value, 1)]).to_json(),
        "source": SOURCE,
    }


def record_outcome(
    session: Session,
    row: AsyncInference,
    variant_name: str,
    counters: Mapping[str, int],
    *,
    now: dt.datetime,
    period: int,
) -> int:
    """Write one finished request's samples: ``counters`` (metric → 1) plus its two durations."""
    dims = sm.variant_dimensions(row.endpoint_name, variant_name)
    start = _floor(now, period)
    rows = [_row(row.account_id, name, dims, float(value), start, period) for name, value in counters.items()]
    if row.started_at is not None:
        backlog_us = max(0.0, (row.started_at - row.received_at).total_seconds() * 1e6)
        rows.append(_row(row.account_id, "TimeInBacklog", dims, round(backlog_us), start, period))
    total_ms = max(0.0, (now - row.received_at).total_seconds() * 1e3)
    rows.append(_row(row.account_id, "TotalProcessingTime", dims, round(total_ms, 3), start, period))
    return metrics.write_points(session, rows)


def first_variant(session: Session, endpoint_id: int) -> str:
    """The variant a request is counted under when no replica answered it (expired, unreadable input)."""
    query = select(EndpointVariant.name).where(EndpointVariant.endpoint_id == endpoint_id)
    name = session.scalar(query.order_by(EndpointVariant.position))
    return name or "AllTraffic"


def backlog(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    """Every async endpoint's backlog now: size, per instance, oldest age and capacity (one dict each)."""
    endpoints = [
        (eid, account, name)
        for eid, account, name, extra in session.execute(
            select(Endpoint.id, Endpoint.account_id, Endpoint.name, Endpoint.extra)
        ).all()
        if (extra or {}).get(async_inference.CONFIG)
    ]
    if not endpoints:
        return []
    ids = [e[0] for e in endpoints]
    open_rows = dict(
        session.execute(
            select(AsyncInference.endpoint_id, func.count(AsyncInference.id))
            .where(AsyncInference.endpoint_id.in_(ids), AsyncInference.status.in_(async_inference.OPEN))
            .group_by(AsyncInference.endpoint_id)
        ).all()
    )
    oldest = dict(
        session.execute(
            select(AsyncInference.endpoint_id, func.min(AsyncInference.received_at))
            .where(AsyncInference.endpoint_id.in_(ids), AsyncInference.status == AsyncInferenceStatus.QUEUED)
            .group_by(AsyncInference.endpoint_id)
        ).all()
    )
    instances = dict(
        session.execute(
            select(EndpointVariant.endpoint_id, func.sum(EndpointVariant.current_instance_count))
            .where(EndpointVariant.endpoint_id.in_(ids))
            .group_by(EndpointVariant.endpoint_id)
        ).all()
    )
    out = []
    for eid, account, name in endpoints:
        size = int(open_rows.get(eid, 0))
        count = int(instances.get(eid) or 0)
        first = oldest.get(eid)
        if first is not None and first.tzinfo is None:
            first = first.replace(tzinfo=dt.UTC)
        out.append(
            {
                "endpoint_id": eid,
                "account_id": account,
                "endpoint_name": name,
                "ApproximateBacklogSize": size,
                "ApproximateBacklogSizePerInstance": size / count if count else float(size),
                "ApproximateAgeOfOldestRequest": max(0.0, (now - first).total_seconds()) if first else 0.0,
                "HasBacklogWithoutCapacity": 1 if size and not count else 0,
            }
        )
    return out


def publish_backlog(session: Session, now: dt.datetime, period: int) -> int:
    """Write the backlog gauges of every async endpoint for the period that just ended."""
    start = _floor(now, period) - dt.timedelta(seconds=period)
    rows = [
        _row(b["account_id"], metric, sm.endpoint_dimensions(b["endpoint_name"]), float(b[metric]), start, period)
        for b in backlog(session, now)
        for metric in sm.ASYNC_ENDPOINT_METRICS
    ]
    return metrics.write_points(session, rows)
