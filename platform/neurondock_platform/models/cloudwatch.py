"""CloudWatch metric alarms and their history."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from neurondock_platform.db import Base, JsonDict, JsonList, Timestamp, UTCDateTime
from neurondock_platform.models.status import AlarmState


class MetricAlarm(Base):
    """A metric alarm with a static threshold, as PutMetricAlarm stores it, and its current state.

    ``evaluated_through`` is the end of the last period the evaluator judged: it moves forward by
    compare-and-set, which is what makes exactly one evaluation per alarm per period however many
    processes run the evaluator (services/cloudwatch/evaluator.py).
    """

    __tablename__ = "metric_alarms"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12), index=True)
    name: Mapped[str] = mapped_column(String(255))
    arn: Mapped[str] = mapped_column(String(1600))
    description: Mapped[str | None] = mapped_column(String(1024))
    actions_enabled: Mapped[bool] = mapped_column(default=True)
    ok_actions: Mapped[JsonList]
    alarm_actions: Mapped[JsonList]
    insufficient_data_actions: Mapped[JsonList]
    namespace: Mapped[str] = mapped_column(String(255))
    metric_name: Mapped[str] = mapped_column(String(255))
    dimensions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    statistic: Mapped[str | None] = mapped_column(String(32))
    extended_statistic: Mapped[str | None] = mapped_column(String(64))
    period: Mapped[int]
    unit: Mapped[str | None] = mapped_column(String(32))
    evaluation_periods: Mapped[int]
    datapoints_to_alarm: Mapped[int]
    threshold: Mapped[float]
    comparison_operator: Mapped[str] = mapped_column(String(64))
    treat_missing_data: Mapped[str] = mapped_column(String(32), default="missing")
    evaluate_low_sample_count_percentile: Mapped[str | None] = mapped_column(String(32))
    state_value: Mapped[AlarmState] = mapped_column(String(32), default=AlarmState.INSUFFICIENT_DATA)
    state_reason: Mapped[str] = mapped_column(Text, default="")
    state_reason_data: Mapped[str | None] = mapped_column(Text)
    state_updated_at: Mapped[Timestamp]
    state_transitioned_at: Mapped[Timestamp]
    configuration_updated_at: Mapped[Timestamp]
    evaluated_through: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    # Tags given at creation, and who manages the alarm (an Application Auto Scaling policy ARN).
    extra: Mapped[JsonDict]
    created_at: Mapped[Timestamp]


class AlarmHistoryItem(Base):
    """One DescribeAlarmHistory item; kept 30 days, also after the alarm is deleted."""

    __tablename__ = "alarm_history"
    __table_args__ = (Index("ix_alarm_history_account_time", "account_id", "timestamp"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    alarm_name: Mapped[str] = mapped_column(String(255))
    alarm_type: Mapped[str] = mapped_column(String(32), default="MetricAlarm")
    timestamp: Mapped[Timestamp]
    item_type: Mapped[str] = mapped_column(String(32))
    summary: Mapped[str] = mapped_column(String(255))
    data: Mapped[str] = mapped_column(Text)
