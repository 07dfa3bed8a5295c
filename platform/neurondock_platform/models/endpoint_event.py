"""What happened to an endpoint: its status changes and the invocations that failed.

Both tables name the endpoint by (account, name) and carry no foreign key, so the rows outlive the
endpoint: the history and errors of a deleted endpoint stay readable until a new endpoint takes
its name, which clears them (``services/endpoint_events.py``). Statuses are SageMaker's
EndpointStatus strings verbatim, plus ``Deleted`` for the row's removal.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from neurondock_platform.db import Base, UTCDateTime, utcnow


class EndpointEvent(Base):
    """One status change of an endpoint, written in the transaction that made it."""

    __tablename__ = "endpoint_events"
    __table_args__ = (Index("ix_endpoint_events_endpoint", "account_id", "endpoint_name", "occurred_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    endpoint_name: Mapped[str] = mapped_column(String(63))
    endpoint_arn: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(32))
    previous_status: Mapped[str | None] = mapped_column(String(32))
    # The endpoint's FailureReason when the change set one, else a short cause ("UpdateEndpoint").
    reason: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class InvocationErrorRecord(Base):
    """One failed invocation as the data plane answered it (flushed with the metrics, ~10 s late)."""

    __tablename__ = "invocation_errors"
    __table_args__ = (Index("ix_invocation_errors_endpoint", "account_id", "endpoint_name", "occurred_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    endpoint_name: Mapped[str] = mapped_column(String(63))
    variant_name: Mapped[str | None] = mapped_column(String(63))
    # Not a foreign key: replicas come and go faster than their errors are read.
    replica_id: Mapped[int | None]
    http_status: Mapped[int]
    error_code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    # A ModelError's OriginalStatusCode and OriginalMessage: what the replica itself answered.
    original_status_code: Mapped[int | None]
    original_message: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(64))
