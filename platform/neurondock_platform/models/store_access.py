"""What an account may reach in an external S3 store (``services/store_access.py``).

Either store credentials of its own, set by an admin (the external store then checks ownership
itself), or the buckets the operator mapped to it, reached with the platform's external key.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from neurondock_platform.db import Base, JsonList, utcnow


class StoreAccess(Base):
    __tablename__ = "store_access"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    access_key_id: Mapped[str | None] = mapped_column(String(128))
    secret_access_key: Mapped[str | None] = mapped_column(String(256))
    # Bucket names the operator mapped to this account (used with the platform's external key).
    buckets: Mapped[JsonList]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
