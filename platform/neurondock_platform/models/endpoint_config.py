"""A SageMaker EndpointConfig: the production variants an endpoint should run."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from neurondock_platform.db import Base, JsonDict, JsonList, Name63, Timestamp


class EndpointConfig(Base):
    __tablename__ = "endpoint_configs"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[Name63]
    arn: Mapped[str] = mapped_column(String(256), index=True)
    # The ProductionVariants list exactly as accepted (validated), in wire shape.
    production_variants: Mapped[JsonList]
    # Other optional members echoed by DescribeEndpointConfig (DataCaptureConfig, KmsKeyId…).
    extra: Mapped[JsonDict]
    created_at: Mapped[Timestamp]
