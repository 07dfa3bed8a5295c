"""Accounts and their access keys: every resource belongs to exactly one account."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from neurondock_platform.db import Base, Timestamp
from neurondock_platform.models.status import AccessKeyStatus


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[Timestamp]

    access_keys: Mapped[list[AccessKey]] = relationship(back_populates="account")


class AccessKey(Base):
    __tablename__ = "access_keys"

    access_key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    secret_access_key: Mapped[str] = mapped_column(String(128))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    status: Mapped[AccessKeyStatus] = mapped_column(String(16), default=AccessKeyStatus.ACTIVE)
    created_at: Mapped[Timestamp]
    last_used_at: Mapped[dt.datetime | None]

    account: Mapped[Account] = relationship(back_populates="access_keys")
