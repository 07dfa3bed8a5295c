"""Keyset pagination behind opaque ``NextToken`` strings, as every SageMaker List* operation pages.

A token carries the sort value and id of the last row returned plus a fingerprint of the query it
belongs to, so pages stay stable while rows are added and a token cannot be replayed on another query.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from neurondock_platform.errors import ValidationException

T = TypeVar("T")

ASCENDING = "Ascending"
DESCENDING = "Descending"
DEFAULT_MAX_RESULTS = 10


@dataclass(frozen=True)
class PageRequest:
    """What the caller asked for: page size, where to resume and the order."""

    max_results: int = DEFAULT_MAX_RESULTS
    next_token: str | None = None
    sort_by: str = "CreationTime"
    sort_order: str = DESCENDING


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows and the token of the next page (None on the last)."""

    items: list[T]
    next_token: str | None


def fingerprint(**parts: Any) -> str:
    """Return a short stable digest of a query's filters and order."""
    canonical = json.dumps(parts, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def encode_token(payload: Mapping[str, Any]) -> str:
    """Return an opaque token for a payload."""
    raw = json.dumps(payload, separators=(",", ":"), default=_json_default).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any]:
    """Return the payload of a token; raise ValidationException when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise invalid_token() from exc
    if not isinstance(payload, dict):
        raise invalid_token()
    return payload


def invalid_token() -> ValidationException:
    return ValidationException("Invalid pagination token: NextToken must be a value returned by the same request.")


def _encode_value(value: Any) -> list[Any]:
    if isinstance(value, dt.datetime):
        return ["dt", value.isoformat()]
    return ["v", value]


def _decode_value(encoded: Any) -> Any:
    if not isinstance(encoded, list) or len(encoded) != 2:
        raise invalid_token()
    kind, value = encoded
    if kind == "dt" and isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise invalid_token() from exc
    if kind == "v" and isinstance(value, str | int | float):
        return value
    raise invalid_token()


def endpoint_log_page(
    session: Session, model: Any, *, op: str, account_id: str, name: str, page: PageRequest
) -> Page[Any]:
    """One page of a per-endpoint log table (``account_id``, ``endpoint_name``, ``occurred_at``), newest first."""
    stmt = select(model).where(model.account_id == account_id, model.endpoint_name == name)
    return paginate(
        session,
        stmt,
        sort_column=model.occurred_at,
        id_column=model.id,
        request=PageRequest(page.max_results, page.next_token, "Time", DESCENDING),
        scope=fingerprint(op=op, account=account_id, name=name),
    )


def paginate(
    session: Session,
    stmt: Select[T],
    *,
    sort_column: InstrumentedAttribute[Any],
    id_column: InstrumentedAttribute[int],
    request: PageRequest,
    scope: str,
) -> Page[T]:
    """Run ``stmt`` ordered by ``sort_column`` (ties by id) and return the requested page."""
    descending = request.sort_order == DESCENDING
    if request.next_token:
        payload = decode_token(request.next_token)
        last_id = payload.get("i")
        if payload.get("s") != scope or not isinstance(last_id, int) or isinstance(last_id, bool):
            raise invalid_token()
        last_value = _decode_value(payload.get("v"))
        if descending:
            after = or_(sort_column < last_value, and_(sort_column == last_value, id_column < last_id))
        else:
            after = or_(sort_column > last_value, and_(sort_column == last_value, id_column > last_id))
        stmt = stmt.where(after)
    order = (sort_column.desc(), id_column.desc()) if descending else (sort_column.asc(), id_column.asc())
    rows = list(session.scalars(stmt.order_by(*order).limit(request.max_results + 1)))
    if len(rows) <= request.max_results:
        return Page(rows, None)
    rows = rows[: request.max_results]
    last = rows[-1]
    token = encode_token(
        {
            "s": scope,
            "v": _encode_value(getattr(last, sort_column.key)),
            "i": getattr(last, id_column.key),
        }
    )
    return Page(rows, token)


def keyset_page(
    session: Session,
    stmt: Select[T],
    *,
    sort_column: InstrumentedAttribute[Any],
    id_column: InstrumentedAttribute[int],
    max_results: int,
    next_token: str | None,
    scope: str,
    order: str = ASCENDING,
    invalid_token: Callable[[], Exception] = invalid_token,
) -> Page[T]:
    """``paginate`` for services whose bad-token error is their own (CloudWatch, Application Auto Scaling)."""
    try:
        return paginate(
            session,
            stmt,
            sort_column=sort_column,
            id_column=id_column,
            request=PageRequest(max_results, next_token, "", order),
            scope=scope,
        )
    except ValidationException as exc:
        raise invalid_token() from exc


@dataclass(frozen=True)
class Lifecycle:
    """Filters of resources with a status and a modification time (ListEndpoints, ListCompilationJobs)."""

    status: str | None = None
    modified_before: dt.datetime | None = None
    modified_after: dt.datetime | None = None


def list_page(
    session: Session,
    entity: type[T],
    *,
    op: str,
    account_id: str,
    page: PageRequest,
    sort_columns: Mapping[str, InstrumentedAttribute[Any]],
    name_contains: str | None = None,
    created_before: dt.datetime | None = None,
    created_after: dt.datetime | None = None,
    lifecycle: Lifecycle | None = None,
) -> Page[T]:
    """Return one page of an account's ``entity`` rows filtered as SageMaker's List* operations filter.

    NameContains ignores case and time bounds are exclusive. ``lifecycle`` adds StatusEquals and the
    LastModifiedTime bounds. The page's token is bound to ``op``, the order and every filter.
    """
    # Every listed resource maps account_id, name, created_at and id (with lifecycle: status, last_modified_at).
    table: Any = entity
    stmt = select(entity).where(table.account_id == account_id)
    if name_contains:
        stmt = stmt.where(func.lower(table.name).contains(name_contains.lower(), autoescape=True))
    if lifecycle is not None and lifecycle.status:
        stmt = stmt.where(table.status == lifecycle.status)
    if created_before is not None:
        stmt = stmt.where(table.created_at < created_before)
    if created_after is not None:
        stmt = stmt.where(table.created_at > created_after)
    if lifecycle is not None and lifecycle.modified_before is not None:
        stmt = stmt.where(table.last_modified_at < lifecycle.modified_before)
    if lifecycle is not None and lifecycle.modified_after is not None:
        stmt = stmt.where(table.last_modified_at > lifecycle.modified_after)
    # The two fingerprint layouts are the ones tokens were issued with before this helper: keep them.
    if lifecycle is None:
        scope = fingerprint(
            op=op,
            sort=page.sort_by,
            order=page.sort_order,
            name=name_contains,
            before=created_before,
            after=created_after,
        )
    else:
        scope = fingerprint(
            op=op,
            sort=page.sort_by,
            order=page.sort_order,
            name=name_contains,
            status=lifecycle.status,
            created=[created_before, created_after],
            modified=[lifecycle.modified_before, lifecycle.modified_after],
        )
    return paginate(
        session, stmt, sort_column=sort_columns[page.sort_by], id_column=table.id, request=page, scope=scope
    )
