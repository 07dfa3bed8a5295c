"""Database leases: one holder at a time for a named duty, taken over when the holder stops renewing.

``acquire`` is a single conditional UPDATE (or an INSERT the primary key lets only one process win),
so it is atomic on SQLite and PostgreSQL alike without row locks. A lease says who *should* do the
work; the work itself stays safe without it (the alarm evaluator advances each alarm by
compare-and-set), so a holder that stalls past its expiry costs a duplicate attempt, never a
duplicate result.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from neurondock_platform.lifetime import pid_alive
from neurondock_platform.models import Lease


def holder_name() -> str:
    """A name for this process as a holder: ``<hostname>:<pid>:<random>`` (``gone`` reads the first two)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def gone(holder: str) -> bool:
    """Whether ``holder`` was a process of this machine that no longer runs (its lease need not be waited out)."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    # Our own pid under another name: an earlier incarnation (a restarted container reuses pids).
    return int(pid) == os.getpid() or not pid_alive(int(pid))


def acquire(
    session: Session, name: str, holder: str, ttl: float, now: dt.datetime, *, dead: str | None = None
) -> int | None:
    """Take or renew the lease; return its epoch when ``holder`` holds it now, else None.

    ``dead`` names a holder known to be gone (``gone``): its lease is taken before it expires.
    Commits (a lease only means something once other processes can see it).
    """
    expires = now + dt.timedelta(seconds=ttl)
    # Each UPDATE returns the epoch it left, so a renewal is one statement and a commit.
    renewed = session.execute(
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder, Lease.expires_at >= now)
        .values(expires_at=expires)
        .returning(Lease.epoch)
        .execution_options(synchronize_session=False)
    ).scalar()
    if renewed is None:
        renewed = session.execute(
            update(Lease)
            .where(Lease.name == name, or_(Lease.expires_at < now, Lease.holder.in_([holder, dead or holder])))
            .values(holder=holder, expires_at=expires, epoch=Lease.epoch + 1)
            .returning(Lease.epoch)
            .execution_options(synchronize_session=False)
        ).scalar()
    if renewed is not None:
        session.commit()
        return int(renewed)
    if session.get(Lease, name) is not None:
        session.rollback()
        return None
    session.add(Lease(name=name, holder=holder, expires_at=expires, epoch=1))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    return 1


def release(session: Session, name: str, holder: str) -> None:
    """Give the lease up at once (on shutdown), so another process need not wait for it to expire."""
    session.execute(
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .values(expires_at=dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
    )
    session.commit()


def held_by_other(session: Session, name: str, holder: str, now: dt.datetime) -> tuple[str, dt.datetime] | None:
    """Who else holds the lease now and until when; None when nobody or ``holder`` does."""
    row = session.execute(select(Lease.holder, Lease.expires_at).where(Lease.name == name)).first()
    if row is None or row.holder == holder or row.expires_at < now:
        return None
    return row.holder, row.expires_at
