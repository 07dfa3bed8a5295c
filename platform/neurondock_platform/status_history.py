"""Endpoint status history: one ``EndpointEvent`` per status change, wherever the change is made.

Endpoint statuses change in several services (``endpoints``, ``reconciler``, ``host_health``) and
none of them has to remember to log it: ``install`` puts two session events on a session factory,
and ``db.make_sessionmaker`` calls it, so the API, the workers and the host agent all get them:

- ``before_flush`` adds one event per new, status-changed or deleted ``Endpoint`` object to the
  flush itself; the attribute history gives the previous status;
- ``do_orm_execute`` wraps ORM bulk ``update(Endpoint)`` / ``delete(Endpoint)`` statements
  (``host_health`` flips endpoints with one conditional UPDATE): it reads the matching rows before
  and after the statement and inserts an event for each row whose status changed or that is gone.

Either way the history commits or rolls back with the change. Core statements on the bare table
(``update(Endpoint.__table__)``, raw SQL) bypass it; the platform issues none.

The reason is the FailureReason set with the change (in the same transaction, even after an
autoflush split them), else a short cause derived from the transition (``CreateEndpoint``,
``UpdateEndpoint``, ``host lost`` …).

Two writers may make the same change at once (a reconcile enqueued by CreateEndpoint and another by a
worker's start-up recovery both flip Creating → InService): each sees the old status in memory. The
second to commit then finds, once its own statements hold the row (PostgreSQL) or the write lock
(SQLite), that the newest recorded event already says so, and drops its copy.

Retention: events name the endpoint by (account, name) and outlive its row (whose removal is a
``Deleted`` event), so a deleted endpoint's history and invocation errors stay readable until a new
endpoint takes the name; creating it deletes them in the same flush, so the new endpoint starts
clean (as its tags do). At most ``MAX_EVENTS`` events are kept per endpoint.

This module sits beside ``db`` (like ``dispatch``), not in ``services``: ``db`` installs it, and the
layer contract forbids anything ``models`` imports (``db`` included) to reach ``services``. Reading
the history is ``services.endpoint_events``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Result, delete, event, insert, inspect, select
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction, sessionmaker

from neurondock_platform.db import utcnow
from neurondock_platform.models import Endpoint, EndpointEvent, EndpointStatus, InvocationErrorRecord

DELETED = "Deleted"
MAX_EVENTS = 1000
REASON_MAX = 1024
# Where UpdateEndpoint parks its target config (services.endpoints.PENDING; a test keeps them equal).
PENDING_UPDATE_KEY = "pending"
# This transaction's events by endpoint (session.info), so a FailureReason set after an autoflush lands on them.
_RECENT = "neurondock_endpoint_events"
# The events the current flush is adding (session.info), checked for concurrent duplicates after it.
_FLUSHING = "neurondock_flushing_events"
_COMPLETED: dict[str, str] = {
    EndpointStatus.CREATING: "CreateEndpoint complete",
    EndpointStatus.UPDATING: "update complete",
    EndpointStatus.SYSTEM_UPDATING: "replicas re-placed",
    EndpointStatus.ROLLING_BACK: "rolled back",
}
_CAUSES: dict[str, str] = {
    EndpointStatus.CREATING: "CreateEndpoint",
    EndpointStatus.DELETING: "DeleteEndpoint",
    EndpointStatus.SYSTEM_UPDATING: "host lost",
    EndpointStatus.ROLLING_BACK: "update failed",
    DELETED: "DeleteEndpoint complete",
}


def install(factory: sessionmaker[Session]) -> None:
    """Record endpoint status changes in every session ``factory`` makes (idempotent)."""
    if not event.contains(factory, "before_flush", _before_flush):
        event.listen(factory, "before_flush", _before_flush)
        event.listen(factory, "do_orm_execute", _on_orm_execute)
        event.listen(factory, "after_transaction_end", _after_transaction_end)
        event.listen(factory, "after_flush_postexec", _drop_concurrent_duplicates)


def reason_for(old: str | None, new: str, *, failure: str | None = None, extra: Mapping[str, Any] | None = None) -> str:
    """Return why an endpoint went from ``old`` to ``new``: the FailureReason set with it, else the cause."""
    if failure and new != DELETED:
        return failure[:REASON_MAX]
    if new == EndpointStatus.UPDATING:
        pending = PENDING_UPDATE_KEY in (extra or {})
        return "UpdateEndpoint" if pending else "UpdateEndpointWeightsAndCapacities"
    if new == EndpointStatus.IN_SERVICE:
        return _COMPLETED.get(old or "", "InService")
    return _CAUSES.get(new, new)


def _row(
    endpoint: Any, status: str, previous: str | None, failure: str | None, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "account_id": endpoint.account_id,
        "endpoint_name": endpoint.name,
        "endpoint_arn": endpoint.arn,
        "status": str(status),
        "previous_status": None if previous is None else str(previous),
        "reason": reason_for(None if previous is None else str(previous), str(status), failure=failure, extra=extra),
        "occurred_at": utcnow(),
    }


def _status_change(session: Session, endpoint: Endpoint) -> dict[str, Any] | None:
    state = inspect(endpoint)
    status = state.attrs.status.history
    if not status.added:
        return None
    if status.deleted:
        previous = status.deleted[0]
    else:
        # Set while expired: the old value was never loaded, but the row still holds it.
        previous = session.scalar(select(Endpoint.status).where(Endpoint.id == endpoint.id))
    current = status.added[0]
    if previous is not None and str(previous) == str(current):
        return None
    failures = state.attrs.failure_reason.history
    failure = failures.added[0] if failures.added else None
    if failure is None and current == EndpointStatus.FAILED:
        failure = endpoint.failure_reason
    return _row(endpoint, current, previous, failure, endpoint.extra)


def _before_flush(session: Session, flush_context: UOWTransaction, instances: object) -> None:
    rows: list[dict[str, Any]] = []
    for obj in session.new:
        if isinstance(obj, Endpoint):
            _forget_name(session, obj.account_id, obj.name)
            rows.append(_row(obj, obj.status or EndpointStatus.CREATING, None, obj.failure_reason, obj.extra))
    recent: dict[tuple[str, str], EndpointEvent] = session.info.setdefault(_RECENT, {})
    changed = []
    for obj in session.dirty:
        if not isinstance(obj, Endpoint):
            continue
        row = _status_change(session, obj)
        if row is not None:
            changed.append(row)
        else:
            _late_failure_reason(obj, recent)
    changed += [_row(obj, DELETED, obj.status, None, None) for obj in session.deleted if isinstance(obj, Endpoint)]
    for account_id, name in {(r["account_id"], r["endpoint_name"]) for r in changed}:
        _prune(session, account_id, name)
    events = [EndpointEvent(**row) for row in rows + changed]
    session.add_all(events)
    recent.update(((e.account_id, e.endpoint_name), e) for e in events)
    session.info[_FLUSHING] = [e for e in events if e.previous_status is not None]


def _already_recorded(session: Session, account_id: str, name: str, status: str, before_id: int | None = None) -> bool:
    """Whether the newest event of an endpoint (older than ``before_id``) already has ``status``."""
    query = select(EndpointEvent.status).where(
        EndpointEvent.account_id == account_id, EndpointEvent.endpoint_name == name
    )
    if before_id is not None:
        query = query.where(EndpointEvent.id < before_id)
    latest = session.scalar(query.order_by(EndpointEvent.id.desc()).limit(1))
    return latest is not None and str(latest) == str(status)


def _drop_concurrent_duplicates(session: Session, flush_context: UOWTransaction) -> None:
    # Runs after the flush's own UPDATE of the endpoint row: a concurrent writer's event is visible now.
    recent: dict[tuple[str, str], EndpointEvent] = session.info.get(_RECENT, {})
    for change in session.info.pop(_FLUSHING, []):
        if change.id is None or not _already_recorded(
            session, change.account_id, change.endpoint_name, change.status, before_id=change.id
        ):
            continue
        session.execute(
            delete(EndpointEvent).where(EndpointEvent.id == change.id).execution_options(synchronize_session=False)
        )
        session.expunge(change)
        key = (change.account_id, change.endpoint_name)
        if recent.get(key) is change:
            del recent[key]


def _late_failure_reason(endpoint: Endpoint, recent: Mapping[tuple[str, str], EndpointEvent]) -> None:
    """Give a status change the FailureReason set after it in the same transaction (an autoflush between)."""
    added = inspect(endpoint).attrs.failure_reason.history.added
    change = recent.get((endpoint.account_id, endpoint.name))
    if added and added[0] and change is not None and change.status != DELETED:
        change.reason = str(added[0])[:REASON_MAX]


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_RECENT, None)


def _forget_name(session: Session, account_id: str, name: str) -> None:
    """A new endpoint takes the name: drop what is left of the last one that had it."""
    for model in (EndpointEvent, InvocationErrorRecord):
        session.execute(
            delete(model)
            .where(model.account_id == account_id, model.endpoint_name == name)
            .execution_options(synchronize_session=False)
        )


def _prune(session: Session, account_id: str, name: str) -> None:
    # The rows added in this flush are not in the table yet: keep MAX_EVENTS - 1 older ones.
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


_COLUMNS = (
    Endpoint.id,
    Endpoint.account_id,
    Endpoint.name,
    Endpoint.arn,
    Endpoint.status,
    Endpoint.failure_reason,
    Endpoint.extra,
)


def _on_orm_execute(state: ORMExecuteState) -> Result[Any] | None:
    if not (state.is_update or state.is_delete):
        return None
    mapper = state.bind_mapper
    if mapper is None or mapper.class_ is not Endpoint:
        return None
    session = state.session
    where = getattr(state.statement, "whereclause", None)
    query = select(*_COLUMNS) if where is None else select(*_COLUMNS).where(where)
    before = {row.id: row for row in session.execute(query)}
    result = state.invoke_statement()
    if not before:
        return result
    after = {row.id: row for row in session.execute(select(*_COLUMNS).where(Endpoint.id.in_(list(before))))}
    rows = []
    for endpoint_id, old in before.items():
        new = after.get(endpoint_id)
        if new is None:
            rows.append(_row(old, DELETED, old.status, None, None))
        elif str(new.status) != str(old.status):
            failure = new.failure_reason if new.failure_reason != old.failure_reason else None
            if failure is None and new.status == EndpointStatus.FAILED:
                failure = new.failure_reason
            rows.append(_row(new, new.status, old.status, failure, new.extra))
    # The statement has run, so a concurrent writer's change and its event are visible now.
    rows = [
        r for r in rows
        if r["status"] == DELETED or not _already_recorded(session, r["account_id"], r["endpoint_name"], r["status"])
    ]  # fmt: skip
    for account_id, name in {(r["account_id"], r["endpoint_name"]) for r in rows}:
        _prune(session, account_id, name)
    if rows:
        session.execute(insert(EndpointEvent), rows)
    return result
