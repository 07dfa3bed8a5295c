"""Application Auto Scaling: scalable targets, their policies and scheduled actions, and activities."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from neurondock_platform.db import Base, JsonDict, JsonList, Timestamp
from neurondock_platform.models.status import ScalingActivityStatus


class ScalableTarget(Base):
    """A registered scalable target: for neurondock, one SageMaker variant's DesiredInstanceCount."""

    __tablename__ = "scalable_targets"
    __table_args__ = (UniqueConstraint("account_id", "service_namespace", "resource_id", "scalable_dimension"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12), index=True)
    service_namespace: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(1600))
    scalable_dimension: Mapped[str] = mapped_column(String(128))
    # The endpoint and variant the ResourceId names (endpoint/<name>/variant/<name>).
    endpoint_name: Mapped[str] = mapped_column(String(63))
    variant_name: Mapped[str] = mapped_column(String(63))
    min_capacity: Mapped[int]
    max_capacity: Mapped[int]
    role_arn: Mapped[str] = mapped_column(String(1600))
    arn: Mapped[str] = mapped_column(String(1600))
    dynamic_scaling_in_suspended: Mapped[bool] = mapped_column(default=False)
    dynamic_scaling_out_suspended: Mapped[bool] = mapped_column(default=False)
    scheduled_scaling_suspended: Mapped[bool] = mapped_column(default=False)
    tags: Mapped[JsonDict]
    # Cooldown bookkeeping: when and to what the last dynamic scale-out / scale-in set the capacity,
    # and the capacity before it (the basis of a metric measured while the change took effect).
    last_scale_out_at: Mapped[dt.datetime | None]
    last_scale_in_at: Mapped[dt.datetime | None]
    capacity_before_change: Mapped[int | None]
    capacity_changed_at: Mapped[dt.datetime | None]
    created_at: Mapped[Timestamp]

    policies: Mapped[list[ScalingPolicy]] = relationship(
        back_populates="target", cascade="all, delete-orphan", order_by="ScalingPolicy.id"
    )
    scheduled_actions: Mapped[list[ScheduledAction]] = relationship(
        back_populates="target", cascade="all, delete-orphan", order_by="ScheduledAction.id"
    )


class ScalingPolicy(Base):
    __tablename__ = "scaling_policies"
    __table_args__ = (UniqueConstraint("target_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12), index=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("scalable_targets.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    arn: Mapped[str] = mapped_column(String(1600), index=True)
    policy_type: Mapped[str] = mapped_column(String(32))
    # TargetTrackingScalingPolicyConfiguration or StepScalingPolicyConfiguration, as given.
    configuration: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The alarms Application Auto Scaling created for a target tracking policy: [{AlarmName, AlarmARN}].
    alarms: Mapped[JsonList]
    # Step scaling cooldown: when this policy last changed capacity and by how much.
    last_adjusted_at: Mapped[dt.datetime | None]
    last_adjustment: Mapped[int | None]
    created_at: Mapped[Timestamp]

    target: Mapped[ScalableTarget] = relationship(back_populates="policies")


class ScheduledAction(Base):
    __tablename__ = "scheduled_actions"
    __table_args__ = (UniqueConstraint("target_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12), index=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("scalable_targets.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    arn: Mapped[str] = mapped_column(String(1600))
    schedule: Mapped[str] = mapped_column(String(1600))
    timezone: Mapped[str | None] = mapped_column(String(64))
    start_time: Mapped[dt.datetime | None]
    end_time: Mapped[dt.datetime | None]
    min_capacity: Mapped[int | None]
    max_capacity: Mapped[int | None]
    # The next time it runs (None once an at() schedule has run); advanced by compare-and-set.
    next_run_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    created_at: Mapped[Timestamp]

    target: Mapped[ScalableTarget] = relationship(back_populates="scheduled_actions")


class ScalingActivity(Base):
    """One scaling activity; kept six weeks, also after its target is deregistered."""

    __tablename__ = "scaling_activities"
    __table_args__ = (Index("ix_scaling_activities_target", "account_id", "resource_id", "start_time"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    activity_id: Mapped[str] = mapped_column(String(36), unique=True)
    account_id: Mapped[str] = mapped_column(String(12))
    service_namespace: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(1600))
    scalable_dimension: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text)
    cause: Mapped[str] = mapped_column(Text)
    start_time: Mapped[Timestamp]
    end_time: Mapped[dt.datetime | None]
    status_code: Mapped[ScalingActivityStatus] = mapped_column(String(32))
    status_message: Mapped[str | None] = mapped_column(Text)
    details: Mapped[str | None] = mapped_column(Text)
    not_scaled_reasons: Mapped[list[Any] | None] = mapped_column(JSON)
    # What the activity asked for, and when it last asked SageMaker (an Unfulfilled one asks again).
    desired_capacity: Mapped[int | None]
    requested_at: Mapped[dt.datetime | None]
