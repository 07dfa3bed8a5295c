"""An S3 bucket of the embedded object store; its objects live on disk, its owner here."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from neurondock_platform.db import Base, Timestamp


class Bucket(Base):
    __tablename__ = "buckets"

    # Bucket names are global across accounts, as in S3.
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    region: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[Timestamp]
