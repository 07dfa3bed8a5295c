"""One InvokeEndpointAsync request: accepted before the 202, then claimed and finished by a worker."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from neurondock_platform.db import Base, JsonDict, Name63, Timestamp
from neurondock_platform.models.status import AsyncInferenceStatus


class AsyncInference(Base):
    __tablename__ = "async_inferences"
    __table_args__ = (
        # The output object's name is unique per request; two requests never share a result.
        UniqueConstraint("output_location"),
        Index("ix_async_inferences_endpoint_status", "endpoint_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    endpoint_name: Mapped[Name63]
    # The caller's X-Amzn-SageMaker-Inference-Id, or a generated UUID.
    inference_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[AsyncInferenceStatus] = mapped_column(String(16), default=AsyncInferenceStatus.QUEUED)
    # Exactly one of the two: an s3:// URI read with the owner's credentials, or the inline body.
    input_location: Mapped[str | None] = mapped_column(String(1024))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    # ContentType, Accept, CustomAttributes as the caller sent them.
    request: Mapped[JsonDict]
    output_location: Mapped[str] = mapped_column(String(1100))
    failure_location: Mapped[str | None] = mapped_column(String(1100))
    request_ttl_seconds: Mapped[int]
    invocation_timeout_seconds: Mapped[int]
    received_at: Mapped[Timestamp]
    # When the request waited out its TTL: an unclaimed request past it fails as expired.
    expires_at: Mapped[dt.datetime]
    # A worker that stops heartbeating loses its claim; a new delivery starts another attempt.
    attempts: Mapped[int] = mapped_column(default=0)
    owner: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[dt.datetime | None]
    # When a delivery of the task is due (a retry waits for a free slot): the sweep resends late ones.
    due_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    variant_name: Mapped[str | None] = mapped_column(String(63))
    failure_reason: Mapped[str | None] = mapped_column(Text)
