"""Notice hosts whose agent stopped heartbeating and put their endpoints back in the reconciler's hands."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from neurondock_platform.db import utcnow
from neurondock_platform.models import Endpoint, EndpointStatus, Host, Replica
from neurondock_platform.services import endpoint_status, leases

# Every worker host runs the lost-host watch; one of them at a time does the looking. Without the
# lease each of N workers scanned the hosts every second: N² rows a second for the database across
# the fleet; now the others read one row by its key (docs/scaling.md). A watcher that dies is
# replaced within this many seconds.
WATCH_LEASE = "host-watch"
WATCH_LEASE_SECONDS = 5.0


def lost_host_ids(session: Session, heartbeat_timeout: float, now: dt.datetime | None = None) -> list[str]:
    """Hosts that have not heartbeated within the timeout."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=heartbeat_timeout)
    return list(session.scalars(select(Host.id).where(Host.last_heartbeat < cutoff)))


def endpoints_on_lost_hosts(session: Session, heartbeat_timeout: float, now: dt.datetime | None = None) -> list[int]:
    """Move InService endpoints with running replicas on lost hosts to SystemUpdating.

    Returns the endpoints that changed; the conditional UPDATE makes sure that when several
    workers look at once, exactly one of them flips (and enqueues) each endpoint.
    """
    lost = lost_host_ids(session, heartbeat_timeout, now)
    if not lost:
        return []
    candidates = set(
        session.scalars(
            select(Replica.endpoint_id).where(Replica.host_id.in_(lost), Replica.desired_state == "running")
        )
    )
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


def watch(session: Session, heartbeat_timeout: float, holder: str, now: dt.datetime | None = None) -> list[int] | None:
    """One worker's turn at the lost-host watch: the lease holder looks (``endpoints_on_lost_hosts``).

    Returns None when another worker holds the watch.
    """
    current = now or utcnow()
    # A look at the lease by its key first: what the other workers pay each second, instead of a scan.
    if leases.holder(session, WATCH_LEASE, current) not in (None, holder):
        return None
    if leases.acquire(session, WATCH_LEASE, holder, WATCH_LEASE_SECONDS, current) is None:
        return None
    return endpoints_on_lost_hosts(session, heartbeat_timeout, current)
