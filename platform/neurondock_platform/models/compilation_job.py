"""A SageMaker CompilationJob: the request as given, its status, and what a worker recorded."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from neurondock_platform.db import Base, JsonDict, Name63, Timestamp, utcnow
from neurondock_platform.models.status import CompilationJobStatus


class CompilationJob(Base):
    __tablename__ = "compilation_jobs"
    # The ARN lower-cases the name, so this also makes names unique regardless of case, as on AWS.
    __table_args__ = (UniqueConstraint("account_id", "arn"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[Name63]
    arn: Mapped[str] = mapped_column(String(256))
    status: Mapped[CompilationJobStatus] = mapped_column(String(16), default=CompilationJobStatus.STARTING)
    role_arn: Mapped[str] = mapped_column(String(2048))
    # InputConfig, OutputConfig and StoppingCondition exactly as accepted; Describe echoes them.
    input_config: Mapped[JsonDict]
    output_config: Mapped[JsonDict]
    stopping_condition: Mapped[JsonDict]
    target_device: Mapped[str] = mapped_column(String(32))
    max_runtime_seconds: Mapped[int]
    # The object the compiled artifact is (or will be) written to: OutputConfig.S3OutputLocation + name.
    model_artifacts: Mapped[str] = mapped_column(String(1024))
    # DataInputConfig normalised to the dict form, returned as DerivedInformation.
    derived_data_input_config: Mapped[str] = mapped_column(Text)
    failure_reason: Mapped[str] = mapped_column(Text, default="")
    log_tail: Mapped[str | None] = mapped_column(Text)
    inference_image: Mapped[str | None] = mapped_column(String(256))
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    # The compiler's whole report (the artifact's manifest.json) once COMPLETED.
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Echoed members (VpcConfig) and where the report, manifest and log objects landed.
    extra: Mapped[JsonDict]
    # Late-acked tasks can be delivered twice and workers can die: one claim per attempt, at most 3.
    attempts: Mapped[int] = mapped_column(default=0)
    owner: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[dt.datetime | None]
    child_pid: Mapped[int | None]
    created_at: Mapped[Timestamp]
    # Set on status changes only (heartbeats update the row too, and must not move it).
    last_modified_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    compilation_started_at: Mapped[dt.datetime | None]
    compilation_ended_at: Mapped[dt.datetime | None]

    def touch(self) -> None:
        """Record a state change for LastModifiedTime."""
        self.last_modified_at = utcnow()
