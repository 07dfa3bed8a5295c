"""What every console view needs: the caller, page parameters and rendering with the layout's context."""

from __future__ import annotations

from typing import Any, TypedDict

from flask import render_template, request

from neurondock_platform.api import context
from neurondock_platform.console._session import CSRF_FIELD, current
from neurondock_platform.errors import ValidationException
from neurondock_platform.services import pagination
from neurondock_platform.services.sandbox import sandbox_mode

PAGE_SIZE = 20
MAX_SEARCH = 63


class Owner(TypedDict):
    account_id: str
    region: str


def owner() -> Owner:
    """The signed-in account and the platform's region, as service keyword arguments."""
    return {"account_id": current().account_id, "region": context.settings().region}


def search() -> str | None:
    value = (request.args.get("q") or "").strip()
    if len(value) > MAX_SEARCH or "\x00" in value:
        raise ValidationException(f"Search terms are at most {MAX_SEARCH} characters.")
    return value or None


def page_request(sort_by: str = "CreationTime") -> pagination.PageRequest:
    """The page a list view shows: ``?page=<token>``, newest first."""
    token = request.args.get("page") or None
    if token is not None and len(token) > 4096:
        raise ValidationException("Invalid page token.")
    return pagination.PageRequest(max_results=PAGE_SIZE, next_token=token, sort_by=sort_by)


def render(template: str, **values: Any) -> str:
    """Render a console page with the session, the CSRF field name and the nav state."""
    session = current()
    return render_template(
        f"console/{template}",
        me=session,
        csrf_field=CSRF_FIELD,
        csrf_token=session.csrf_token,
        section=values.pop("section", ""),
        sandbox=sandbox_mode(context.db()),
        **values,
    )


def form_str(name: str, *, required: bool = True, max_length: int = 1024) -> str:
    """Return a stripped form field, raising ValidationException when missing or too long."""
    value = (request.form.get(name) or "").strip()
    if required and not value:
        raise ValidationException(f"The field {name.replace('_', ' ')} is required.")
    if len(value) > max_length or "\x00" in value:
        raise ValidationException(f"The field {name.replace('_', ' ')} is too long.")
    return value


def form_int(name: str, *, minimum: int, maximum: int, default: int | None = None) -> int:
    raw = (request.form.get(name) or "").strip()
    if not raw and default is not None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValidationException(f"The field {name.replace('_', ' ')} must be a whole number.") from exc
    if not minimum <= value <= maximum:
        raise ValidationException(f"The field {name.replace('_', ' ')} must be between {minimum} and {maximum}.")
    return value


def form_float(name: str, *, minimum: float, maximum: float) -> float | None:
    raw = (request.form.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValidationException(f"The field {name.replace('_', ' ')} must be a number.") from exc
    if not minimum <= value <= maximum:
        raise ValidationException(f"The field {name.replace('_', ' ')} must be between {minimum} and {maximum}.")
    return value
