"""An Endpoint and its variants: the desired state the reconciler converges to."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from neurondock_platform.db import Base, JsonDict, Name63, Timestamp, utcnow
from neurondock_platform.models.status import EndpointStatus


class Endpoint(Base):
    __tablename__ = "endpoints"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[Name63]
    arn: Mapped[str] = mapped_column(String(256), index=True)
    endpoint_config_name: Mapped[Name63]
    status: Mapped[EndpointStatus] = mapped_column(String(32), default=EndpointStatus.CREATING)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # Bumped on every change of desired state so a stale reconcile run can tell it is stale.
    generation: Mapped[int] = mapped_column(default=1)
    extra: Mapped[JsonDict]
    created_at: Mapped[Timestamp]
    last_modified_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    variants: Mapped[list[EndpointVariant]] = relationship(
        back_populates="endpoint", cascade="all, delete-orphan", order_by="EndpointVariant.position"
    )

    def touch(self) -> None:
        """Record a state change for LastModifiedTime."""
        self.last_modified_at = utcnow()


class EndpointVariant(Base):
    """One ProductionVariant of a live endpoint, with the model it resolved at create time."""

    __tablename__ = "endpoint_variants"
    __table_args__ = (UniqueConstraint("endpoint_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"), index=True)
    name: Mapped[Name63]
    position: Mapped[int] = mapped_column(default=0)
    model_name: Mapped[Name63]
    # Image, ModelDataUrl and Environment copied from the Model: deleting the Model later does not
    # break a running endpoint, as on SageMaker.
    container: Mapped[dict[str, Any]] = mapped_column(default=dict)
    instance_type: Mapped[str] = mapped_column(String(64))
    desired_instance_count: Mapped[int] = mapped_column(default=1)
    current_instance_count: Mapped[int] = mapped_column(default=0)
    desired_weight: Mapped[float] = mapped_column(default=1.0)
    current_weight: Mapped[float] = mapped_column(default=0.0)
    variant_status: Mapped[str | None] = mapped_column(String(32))
    status_message: Mapped[str | None] = mapped_column(Text)
    status_started_at: Mapped[dt.datetime | None]
    extra: Mapped[JsonDict]

    endpoint: Mapped[Endpoint] = relationship(back_populates="variants")
