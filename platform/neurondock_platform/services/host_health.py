"""Notice hosts whose agent stopped heartbeating and put their endpoints back in the reconciler's hands."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from neurondock_platform.db import utcnow
from neurondock_platform.models import Endpoint, EndpointStatus, Host, Replica
from neurondock_platform.services import endpoint_status, leases

# Every worker host runs the lost-host watch; one of them at a time does the looking. Without the
# lease each of N workers scanned the hosts every second: N² rows a second for the database across
# the fleet; now the others read one row by its key (docs/scaling.md).
WATCH_LEASE = "host-watch"
# A look planned for the moment a host turns lost comes this much after it, so the host is past the cut-off.
PAST = dt.timedelta(seconds=0.05)


def lease_seconds(heartbeat_timeout: float) -> float:
    """The watch lease's life: one heartbeat timeout, so a watcher that dies is replaced within one."""
    return max(1.0, heartbeat_timeout)


def retry_seconds(heartbeat_timeout: float) -> float:
    """Seconds between looks while a lost host still holds running replicas (five per timeout, 1–5 s)."""
    return max(1.0, min(5.0, heartbeat_timeout / 5))


def lost_host_ids(session: Session, heartbeat_timeout: float, now: dt.datetime | None = None) -> list[str]:
    """Hosts that have not heartbeated within the timeout."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=heartbeat_timeout)
    return list(session.scalars(select(Host.id).where(Host.last_heartbeat < cutoff)))


def endpoints_on_lost_hosts(session: Session, heartbeat_timeout: float, now: dt.datetime | None = None) -> list[int]:
    """Move InService endpoints with running replicas on lost hosts to SystemUpdating.

    Returns the endpoints that changed; the conditional UPDATE makes sure that when several
    workers look at once, exactly one of them flips (and enqueues) each endpoint.
    """
    return _flip(session, _running_on(session, lost_host_ids(session, heartbeat_timeout, now)))


def _running_on(session: Session, hosts: list[str]) -> set[int]:
    """Endpoints with replicas meant to run on ``hosts``."""
    if not hosts:
        return set()
    return set(
        session.scalars(
            select(Replica.endpoint_id).where(Replica.host_id.in_(hosts), Replica.desired_state == "running")
        )
    )


def _flip(session: Session, candidates: set[int]) -> list[int]:
    flipped = []
    for endpoint_id in sorted(candidates):
        result = session.execute(
            update(Endpoint)
            .where(Endpoint.id == endpoint_id, Endpoint.status == EndpointStatus.IN_SERVICE)
            .values(
                status=EndpointStatus.SYSTEM_UPDATING,
                generation=Endpoint.generation + 1,
                last_modified_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            endpoint = session.get(Endpoint, endpoint_id, populate_existing=True)
            if endpoint is not None:
                endpoint_status.record(session, endpoint, EndpointStatus.IN_SERVICE)
            flipped.append(endpoint_id)
    return flipped


@dataclass(frozen=True)
class WatchPass:
    """What one look did, and when the next one is due."""

    # Endpoints moved to SystemUpdating; None when another worker holds the watch.
    flipped: list[int] | None
    next_look: dt.datetime


@dataclass
class HostWatch:
    """One worker's lost-host watch between looks: whether it holds the lease, and since when.

    A look plans the next one (docs/supervision.md, "Waking instead of polling"): the holder looks
    again when the host with the oldest heartbeat would turn lost or when its lease is half gone,
    whichever comes first, and every ``retry_seconds`` while a lost host still holds running
    replicas (an endpoint that was not InService when its host went is flipped once it is); the
    others read the lease row when it would expire. A host that stops heartbeating is noticed
    when it turns lost, not up to a poll later; a wake-up only to renew the lease reads no hosts.
    """

    heartbeat_timeout: float
    holder: str
    # When this worker last took or renewed the lease; None while it does not hold it.
    renewed_at: dt.datetime | None = None
    # The soonest the hosts can show something new (a host turning lost, a retry); None: look now.
    scan_due: dt.datetime | None = None

    def look(self, session: Session, now: dt.datetime | None = None) -> WatchPass:
        """Renew or take the lease when due; as its holder, flip the endpoints of lost hosts."""
        current = now or utcnow()
        life = lease_seconds(self.heartbeat_timeout)
        if self.renewed_at is None or current - self.renewed_at >= dt.timedelta(seconds=life / 2):
            # A look at the lease by its key first (what the other workers pay, instead of a scan);
            # the holder renews straight away.
            held = self.renewed_at is not None
            other = None if held else leases.held_by_other(session, WATCH_LEASE, self.holder, current)
            # A holder that was a process of this machine and is gone (a restarted worker's
            # predecessor) is not waited out.
            dead = other[0] if other is not None and leases.gone(other[0]) else None
            if (other is not None and dead is None) or leases.acquire(
                session, WATCH_LEASE, self.holder, life, current, dead=dead
            ) is None:
                self.renewed_at = self.scan_due = None
                expiry = other[1] if other is not None else current + dt.timedelta(seconds=life / 2)
                return WatchPass(None, min(expiry, current + dt.timedelta(seconds=life)) + PAST)
            self.renewed_at = current
        renew = self.renewed_at + dt.timedelta(seconds=life / 2)
        if self.scan_due is not None and current < self.scan_due:
            # A wake-up only to renew: heartbeats only move forward, so no host can have turned lost yet.
            return WatchPass([], min(renew, self.scan_due))
        cutoff = current - dt.timedelta(seconds=self.heartbeat_timeout)
        # The lost hosts and the oldest heartbeat among the live ones, in one statement.
        oldest_live = select(func.min(Host.last_heartbeat)).where(Host.last_heartbeat >= cutoff).scalar_subquery()
        rows = session.execute(
            select(Host.id, Host.last_heartbeat).where(
                or_(Host.last_heartbeat < cutoff, Host.last_heartbeat == oldest_live)
            )
        ).all()
        lost = [host_id for host_id, beat in rows if beat < cutoff]
        running = _running_on(session, lost)
        flipped = _flip(session, running)
        # A host that registers after this look turns lost no sooner than a timeout from now.
        due = [current + dt.timedelta(seconds=self.heartbeat_timeout) + PAST]
        due += [beat + dt.timedelta(seconds=self.heartbeat_timeout) + PAST for _, beat in rows if beat >= cutoff]
        if running:
            due.append(current + dt.timedelta(seconds=retry_seconds(self.heartbeat_timeout)))
        self.scan_due = min(due)
        return WatchPass(flipped, min(renew, self.scan_due))


def watch(session: Session, heartbeat_timeout: float, holder: str, now: dt.datetime | None = None) -> list[int] | None:
    """One look by a worker that keeps no state between looks (``HostWatch.look``); None when another watches."""
    return HostWatch(heartbeat_timeout, holder).look(session, now).flipped
