"""Bearer tokens and console sessions revoked before they expire (``services/revocations.py``).

A row either names one token by its ``jti`` or, with a ``jti`` of ``all:<access key id>``, every
token of that key issued up to ``revoked_at``. Rows are useless once ``expires_at`` passes (no token
they could refuse is still valid) and are purged then.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from neurondock_platform.db import Base, UTCDateTime


class RevokedToken(Base):
    __tablename__ = "revoked_tokens"

    # Room for "all:" + the longest access key id (128).
    jti: Mapped[str] = mapped_column(String(140), primary_key=True)
    # Not foreign keys: a row only has to outlive the tokens it refuses, whatever happens to the key.
    access_key_id: Mapped[str] = mapped_column(String(128))
    account_id: Mapped[str] = mapped_column(String(12))
    revoked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
