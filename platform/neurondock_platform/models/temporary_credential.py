"""Temporary credentials issued by STS ``AssumeRole`` (``services/sts.py``).

A row is an ``ASIA…`` key pair of one account with the SHA-256 of its session token; every API
process verifies SigV4 against it through the credential cache. Rows are purged a day after they
expire (until then a request signed with them is refused as expired rather than unknown).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from neurondock_platform.db import Base, Timestamp, UTCDateTime


class TemporaryCredential(Base):
    __tablename__ = "temporary_credentials"

    access_key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    secret_access_key: Mapped[str] = mapped_column(String(128))
    session_token_sha256: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    # The role ARN exactly as the caller gave it (its account id may be any: the role is always
    # assumed within ``account_id``).
    role_arn: Mapped[str] = mapped_column(String(2048))
    role_session_name: Mapped[str] = mapped_column(String(64))
    # The long-term key that asked, if any (the platform asks for workers itself): disabling or
    # rotating that key ends these credentials too.
    source_access_key_id: Mapped[str | None] = mapped_column(String(128), index=True)
    issued_at: Mapped[Timestamp]
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
