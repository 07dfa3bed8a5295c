"""Recent failed invocations per endpoint: written by the data plane's metrics flush, read by operators.

The data plane keeps failures in a small in-memory ring per endpoint (``dataplane/invocation_errors.py``)
and hands them here every ~10 s with the metric points. Each write keeps the newest
``KEEP_PER_ENDPOINT`` rows of every endpoint it touched and deletes the rest in the same transaction,
so the table stays bounded without a separate sweep. Rows name the endpoint by (account, name), like
``EndpointEvent``: they outlive a deleted endpoint and are cleared when a new one takes the name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from neurondock_platform.models import InvocationErrorRecord
from neurondock_platform.services import pagination

KEEP_PER_ENDPOINT = 200


def write_errors(session: Session, rows: Sequence[dict[str, Any]], *, keep: int = KEEP_PER_ENDPOINT) -> None:
    """Insert failed invocations and trim every endpoint they name to its newest ``keep`` rows."""
    if not rows:
        return
    session.execute(insert(InvocationErrorRecord), list(rows))
    for account_id, name in sorted({(r["account_id"], r["endpoint_name"]) for r in rows}):
        stale = list(
            session.scalars(
                select(InvocationErrorRecord.id)
                .where(InvocationErrorRecord.account_id == account_id, InvocationErrorRecord.endpoint_name == name)
                .order_by(InvocationErrorRecord.occurred_at.desc(), InvocationErrorRecord.id.desc())
                .offset(keep)
            )
        )
        if stale:
            session.execute(
                delete(InvocationErrorRecord)
                .where(InvocationErrorRecord.id.in_(stale))
                .execution_options(synchronize_session=False)
            )


def list_errors(
    session: Session, *, account_id: str, name: str, page: pagination.PageRequest
) -> pagination.Page[InvocationErrorRecord]:
    """Return one page of an endpoint's recorded invocation failures, newest first."""
    return pagination.endpoint_log_page(
        session, InvocationErrorRecord, op="ListInvocationErrors", account_id=account_id, name=name, page=page
    )
