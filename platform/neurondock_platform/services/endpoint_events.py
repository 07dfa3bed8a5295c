"""Reading an endpoint's status history (written by ``services.endpoint_status``)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from neurondock_platform.errors import NotFoundError
from neurondock_platform.models import EndpointEvent
from neurondock_platform.services import endpoints, pagination


@dataclass(frozen=True)
class KnownEndpoint:
    """An endpoint whose history can be read: live, or deleted and its name not yet reused."""

    name: str
    arn: str
    deleted: bool


def known_endpoint(session: Session, *, account_id: str, region: str, name: str) -> KnownEndpoint:
    """Return the caller's endpoint, live or deleted with its history kept.

    Raises:
        NotFoundError: exactly as for a missing endpoint when there is neither (another account's
            endpoint included).
    """
    try:
        endpoint = endpoints.get_endpoint(session, account_id=account_id, region=region, name=name)
    except NotFoundError:
        arn = session.scalar(
            select(EndpointEvent.endpoint_arn)
            .where(EndpointEvent.account_id == account_id, EndpointEvent.endpoint_name == name)
            .limit(1)
        )
        if arn is None:
            raise
        return KnownEndpoint(name, arn, deleted=True)
    return KnownEndpoint(endpoint.name, endpoint.arn, deleted=False)


def list_events(
    session: Session, *, account_id: str, name: str, page: pagination.PageRequest
) -> pagination.Page[EndpointEvent]:
    """Return one page of an endpoint's status changes, newest first."""
    return pagination.endpoint_log_page(
        session, EndpointEvent, op="ListEndpointEvents", account_id=account_id, name=name, page=page
    )


def recent_events(session: Session, *, account_id: str, name: str, limit: int = 200) -> list[EndpointEvent]:
    """Return an endpoint's latest status changes, oldest first (for timelines)."""
    stmt = (
        select(EndpointEvent)
        .where(EndpointEvent.account_id == account_id, EndpointEvent.endpoint_name == name)
        .order_by(EndpointEvent.occurred_at.desc(), EndpointEvent.id.desc())
        .limit(limit)
    )
    return list(reversed(session.scalars(stmt).all()))
