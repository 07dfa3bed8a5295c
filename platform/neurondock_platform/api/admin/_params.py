"""Query-string and JSON-body parameters of the admin API, checked with one error shape."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, TypedDict, TypeVar

from flask import request

from neurondock_platform.api.admin._errors import BadRequest
from neurondock_platform.services import pagination

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
SORT_FIELDS = {"name": "Name", "creation_time": "CreationTime", "status": "Status"}
ORDERS = {"asc": pagination.ASCENDING, "desc": pagination.DESCENDING}
MAX_STRING = 1024


def string(name: str, default: str | None = None, *, max_length: int = MAX_STRING) -> str | None:
    """Return a query parameter (stripped of nothing), checking its length."""
    value = request.args.get(name)
    if value is None or value == "":
        return default
    if len(value) > max_length:
        raise BadRequest(f"Query parameter {name!r} must be at most {max_length} characters.")
    if "\x00" in value:
        raise BadRequest(f"Query parameter {name!r} must not contain NUL characters.")
    return value


def integer(name: str, default: int, *, minimum: int, maximum: int) -> int:
    """Return an integer query parameter within bounds."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"Query parameter {name!r} must be an integer.") from exc
    if not minimum <= value <= maximum:
        raise BadRequest(f"Query parameter {name!r} must be between {minimum} and {maximum}.")
    return value


def choice(name: str, options: Sequence[str], default: str | None = None) -> str | None:
    """Return a query parameter that must be one of ``options``."""
    value = string(name)
    if value is None:
        return default
    if value not in options:
        raise BadRequest(f"Query parameter {name!r} must be one of: {', '.join(options)}.")
    return value


def timestamp(name: str) -> dt.datetime | None:
    """Return an ISO 8601 (or epoch seconds) query parameter as aware UTC."""
    raw = string(name, max_length=64)
    if raw is None:
        return None
    try:
        value = dt.datetime.fromtimestamp(float(raw), dt.UTC)
    except (ValueError, OverflowError, OSError):
        try:
            value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadRequest(f"Query parameter {name!r} must be an ISO 8601 time or epoch seconds.") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    if not 1970 <= value.year <= 9998:
        raise BadRequest(f"Query parameter {name!r} is out of range.")
    return value.astimezone(dt.UTC)


def page(*, sort_fields: Sequence[str] = ("name", "creation_time")) -> pagination.PageRequest:
    """Return the page request of a list route: ``limit``, ``next_token``, ``sort_by``, ``sort_order``."""
    sort_by = choice("sort_by", list(sort_fields), "creation_time") or "creation_time"
    order = choice("sort_order", list(ORDERS), "desc") or "desc"
    return pagination.PageRequest(
        max_results=integer("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT),
        next_token=string("next_token", max_length=4096),
        sort_by=SORT_FIELDS[sort_by],
        sort_order=ORDERS[order],
    )


def slice_page(items: list[T], *, scope: str) -> tuple[list[T], str | None]:
    """Page an in-memory list (small collections: hosts, accounts, keys) with an offset token."""
    limit = integer("limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    token = string("next_token", max_length=4096)
    offset = 0
    if token:
        payload = pagination.decode_token(token)
        offset_value = payload.get("o")
        if payload.get("s") != scope or not isinstance(offset_value, int) or offset_value < 0:
            raise pagination.invalid_token()
        offset = offset_value
    chunk = items[offset : offset + limit]
    following = offset + limit
    return chunk, pagination.encode_token({"s": scope, "o": following}) if following < len(items) else None


def body() -> dict[str, Any]:
    """Return the request's JSON object body (an empty body is ``{}``)."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest("The request body must be a JSON object.") from exc
    if not isinstance(value, dict):
        raise BadRequest("The request body must be a JSON object.")
    return value


def field(data: dict[str, Any], name: str, kind: type[T], *, required: bool = False, default: Any = None) -> Any:
    """Return one member of a JSON body, checking its type."""
    if name not in data or data[name] is None:
        if required:
            raise BadRequest(f"Member {name!r} is required.")
        return default
    value = data[name]
    if kind is int and isinstance(value, bool):
        raise BadRequest(f"Member {name!r} must be an integer.")
    if not isinstance(value, kind):
        raise BadRequest(f"Member {name!r} must be a {kind.__name__}.")
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise BadRequest(f"Member {name!r} must be at most {MAX_STRING} characters.")
    return value


class ListFilters(TypedDict):
    name_contains: str | None
    created_after: dt.datetime | None
    created_before: dt.datetime | None


def list_filters() -> ListFilters:
    """The filters every list route takes: ``name_contains``, ``created_after`` and ``created_before``."""
    return {
        "name_contains": string("name_contains", max_length=63),
        "created_after": timestamp("created_after"),
        "created_before": timestamp("created_before"),
    }
