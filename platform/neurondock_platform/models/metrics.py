"""The metric store: one row per metric stream and one per datapoint, CloudWatch's data model.

A stream is an account's (namespace, metric name, dimension set); ``dimensions_hash`` identifies the
set (sorted name/value pairs) so a stream is found without comparing JSON. ``endpoint_name``,
``variant_name`` and ``replica_id`` repeat the EndpointName / VariantName / ReplicaId dimensions so
the platform's own views find an endpoint's streams by index.

A datapoint aggregates the samples of one stream over ``period_seconds`` from ``period_start``: the
data plane writes one per stream per flush, PutMetricData one per datum, and retention rolls them up
into 60 s, 300 s and 3600 s rows as they age (``services/metrics.py``). ``sketch`` holds the
percentile buckets (``sketch.py``); ``buckets`` holds what neurondock's own metrics carry beyond
CloudWatch's statistics (BatchSize's histogram, a replica's neuron-monitor summary).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from neurondock_platform.db import Base, Timestamp, UTCDateTime


class MetricStream(Base):
    __tablename__ = "metric_streams"
    __table_args__ = (
        UniqueConstraint("account_id", "namespace", "metric_name", "dimensions_hash"),
        Index("ix_metric_streams_endpoint", "account_id", "endpoint_name", "metric_name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    namespace: Mapped[str] = mapped_column(String(255))
    metric_name: Mapped[str] = mapped_column(String(255))
    dimensions: Mapped[list[Any]] = mapped_column(JSON)
    dimensions_hash: Mapped[str] = mapped_column(String(64))
    endpoint_name: Mapped[str | None] = mapped_column(String(63))
    variant_name: Mapped[str | None] = mapped_column(String(63))
    # Not a foreign key: streams outlive the replicas (and endpoints) they describe.
    replica_id: Mapped[int | None] = mapped_column(index=True)
    created_at: Mapped[Timestamp]


class MetricDatapoint(Base):
    __tablename__ = "metric_datapoints"
    __table_args__ = (Index("ix_metric_datapoints_stream_time", "stream_id", "period_start"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stream_id: Mapped[int] = mapped_column(ForeignKey("metric_streams.id", ondelete="CASCADE"))
    period_start: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    period_seconds: Mapped[int]
    sample_count: Mapped[float]
    sum: Mapped[float]
    minimum: Mapped[float | None]
    maximum: Mapped[float | None]
    unit: Mapped[str] = mapped_column(String(32))
    sketch: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    buckets: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Who wrote it (an API process, "PutMetricData", "rollup"): several writers add up.
    source: Mapped[str] = mapped_column(String(64))
