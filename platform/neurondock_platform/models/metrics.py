"""Endpoint metrics as a time series: one row per (endpoint, variant, metric, period) and writer.

The data plane aggregates in memory and flushes a period's summary every ~10 s
(``dataplane/metrics.py``); nothing is written per request. Rows carry CloudWatch-style statistics
(sum, count, min, max) and the period's p50/p99; ``buckets`` holds histogram counts where a metric
has them (BatchSize). ``replica_id`` is set only for per-replica metrics (NeuronCoreUtilization).
Several API processes may write the same period: ``source`` tells them apart and queries add up.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from neurondock_platform.db import Base, UTCDateTime


class MetricPoint(Base):
    __tablename__ = "metric_points"
    __table_args__ = (Index("ix_metric_points_series", "account_id", "endpoint_name", "metric", "period_start"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    endpoint_name: Mapped[str] = mapped_column(String(63))
    variant_name: Mapped[str] = mapped_column(String(63))
    # Not a foreign key: points outlive the replicas (and endpoints) they describe.
    replica_id: Mapped[int | None]
    metric: Mapped[str] = mapped_column(String(64))
    period_start: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    period_seconds: Mapped[int]
    sum: Mapped[float]
    count: Mapped[int]
    minimum: Mapped[float | None]
    maximum: Mapped[float | None]
    p50: Mapped[float | None]
    p99: Mapped[float | None]
    unit: Mapped[str] = mapped_column(String(16))
    buckets: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(64))
