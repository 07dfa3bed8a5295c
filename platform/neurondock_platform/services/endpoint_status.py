"""Moving an endpoint between statuses, and the one ``EndpointEvent`` each move leaves in its history.

Every place that changes an endpoint's status calls one verb here, in the transaction that makes the
change, so the history commits or rolls back with it:

- ``created``: a new endpoint (no previous status); it takes over its name, so what is left of the
  last endpoint of that name (events, invocation errors) goes in the same flush;
- ``transition``: any later change, made on the ORM object;
- ``record``: a change another statement already made (``host_health`` flips endpoints with one
  conditional UPDATE so that exactly one worker wins);
- ``deleted``: the last event, before the reconciler removes the row.

An event's reason is the FailureReason set with the change, else the cause the caller names, else
one derived from the move (``CreateEndpoint complete``, ``host lost`` …).

Two writers may make the same change at once (a reconcile enqueued by CreateEndpoint and another by
a worker's start-up recovery both flip Creating → InService), each having read the old status.
``transition`` writes the row first: once the writer holds it (PostgreSQL's row lock, SQLite's write
lock) a concurrent writer's event is visible, and when the newest one already says so it records
nothing.

Retention: events name the endpoint by (account, name) and outlive its row, so a deleted endpoint's
history and invocation errors stay readable until a new endpoint takes the name. At most
``MAX_EVENTS`` events are kept per endpoint. Reading the history is ``services.endpoint_events``.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from neurondock_platform.db import utcnow
from neurondock_platform.models import Endpoint, EndpointEvent, EndpointStatus, InvocationErrorRecord

DELETED = "Deleted"
MAX_EVENTS = 1000
REASON_MAX = 1024
_COMPLETED: dict[str, str] = {
    EndpointStatus.CREATING: "CreateEndpoint complete",
    EndpointStatus.UPDATING: "update complete",
    EndpointStatus.SYSTEM_UPDATING: "replicas re-placed",
    EndpointStatus.ROLLING_BACK: "rolled back",
}
_CAUSES: dict[str, str] = {
    EndpointStatus.CREATING: "CreateEndpoint",
    EndpointStatus.UPDATING: "UpdateEndpoint",
    EndpointStatus.DELETING: "DeleteEndpoint",
    EndpointStatus.SYSTEM_UPDATING: "host lost",
    EndpointStatus.ROLLING_BACK: "update failed",
    DELETED: "DeleteEndpoint complete",
}


def created(session: Session, endpoint: Endpoint) -> None:
    """Record a new endpoint's first status; the history of an earlier endpoint of that name goes."""
    for model in (EndpointEvent, InvocationErrorRecord):
        session.execute(
            delete(model)
            .where(model.account_id == endpoint.account_id, model.endpoint_name == endpoint.name)
            .execution_options(synchronize_session=False)
        )
    _add(session, endpoint, None, str(endpoint.status or EndpointStatus.CREATING), None)


def transition(
    session: Session,
    endpoint: Endpoint,
    status: EndpointStatus,
    reason: str | None = None,
    *,
    failure_reason: str | None = None,
) -> None:
    """Move ``endpoint`` to ``status`` with ``failure_reason`` as its FailureReason, and record the move.

    ``reason`` names the cause when there is no failure (default: one derived from the move).
    DeleteEndpoint keeps the FailureReason the endpoint had; any other move replaces it. Setting the
    status it already has records nothing (the FailureReason may still change).
    """
    previous = None if endpoint.status is None else str(endpoint.status)
    failure = None if failure_reason is None else failure_reason[:REASON_MAX]
    changed = previous != str(status)
    if status != EndpointStatus.DELETING and endpoint.failure_reason != failure:
        endpoint.failure_reason = failure
        endpoint.touch()
    if not changed:
        return
    endpoint.status = status
    endpoint.touch()
    # Write the row first: a concurrent writer of the same move has committed its event by the time we hold it.
    session.flush()
    if previous is not None and _latest_status(session, endpoint) == str(status):
        return
    _add(session, endpoint, previous, str(status), failure or reason)


def record(session: Session, endpoint: Endpoint, previous: EndpointStatus, reason: str | None = None) -> None:
    """Record a move to the endpoint's current status that a conditional UPDATE has already made."""
    _add(session, endpoint, str(previous), str(endpoint.status), reason)


def deleted(session: Session, endpoint: Endpoint) -> None:
    """Record the endpoint's removal; call it before deleting the row."""
    _add(session, endpoint, None if endpoint.status is None else str(endpoint.status), DELETED, None)


def _cause(previous: str | None, status: str) -> str:
    if status == EndpointStatus.IN_SERVICE:
        return _COMPLETED.get(previous or "", "InService")
    return _CAUSES.get(status, status)


def _latest_status(session: Session, endpoint: Endpoint) -> str | None:
    latest = session.scalar(
        select(EndpointEvent.status)
        .where(EndpointEvent.account_id == endpoint.account_id, EndpointEvent.endpoint_name == endpoint.name)
        .order_by(EndpointEvent.id.desc())
        .limit(1)
    )
    return None if latest is None else str(latest)


def _add(session: Session, endpoint: Endpoint, previous: str | None, status: str, reason: str | None) -> None:
    _prune(session, endpoint.account_id, endpoint.name)
    session.add(
        EndpointEvent(
            account_id=endpoint.account_id,
            endpoint_name=endpoint.name,
            endpoint_arn=endpoint.arn,
            status=status,
            previous_status=previous,
            reason=(reason or _cause(previous, status))[:REASON_MAX],
            occurred_at=utcnow(),
        )
    )


def _prune(session: Session, account_id: str, name: str) -> None:
    # The event about to be added is not in the table yet: keep MAX_EVENTS - 1 older ones.
    stale = (
        select(EndpointEvent.id)
        .where(EndpointEvent.account_id == account_id, EndpointEvent.endpoint_name == name)
        .order_by(EndpointEvent.occurred_at.desc(), EndpointEvent.id.desc())
        .offset(MAX_EVENTS - 1)
    )
    ids = list(session.scalars(stale))
    if ids:
        session.execute(
            delete(EndpointEvent).where(EndpointEvent.id.in_(ids)).execution_options(synchronize_session=False)
        )
