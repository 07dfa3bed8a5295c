"""Notice hosts whose agent stopped heartbeating and put their endpoints back in the reconciler's hands."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from neurondock_platform.db import utcnow
from neurondock_platform.models import Endpoint, EndpointStatus, Host, Replica


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
            flipped.append(endpoint_id)
    return flipped
