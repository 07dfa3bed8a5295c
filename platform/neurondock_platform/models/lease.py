"""Named leases in the database: which process holds a singleton duty, and until when."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from neurondock_platform.db import Base, UTCDateTime


class Lease(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Bumped whenever the lease changes hands: a fencing token for work started under it.
    epoch: Mapped[int] = mapped_column(default=1)
