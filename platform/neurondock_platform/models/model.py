"""A SageMaker Model: a container image plus model data."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from neurondock_platform.db import Base, JsonDict, JsonList, Name63, Timestamp


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[Name63]
    arn: Mapped[str] = mapped_column(String(256), index=True)
    execution_role_arn: Mapped[str | None] = mapped_column(String(2048))
    primary_container: Mapped[dict[str, Any] | None]
    containers: Mapped[JsonList]
    # Echoed fields that neurondock stores but does not act on (VpcConfig, InferenceExecutionConfig…).
    extra: Mapped[JsonDict]
    enable_network_isolation: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[Timestamp]
