"""Console page for admins: accounts and access keys (create, disable, enable, rotate)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, request, url_for
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response as BaseResponse

from neurondock_platform.api import context
from neurondock_platform.api.admin import shapes
from neurondock_platform.api.admin._auth import apply_key_change
from neurondock_platform.console._common import form_str, render
from neurondock_platform.console._session import current
from neurondock_platform.errors import PlatformError
from neurondock_platform.models import AccessKeyStatus
from neurondock_platform.services import accounts


class NotAdmin(PlatformError):
    code = "AccessDenied"
    http_status = 403
    fmt = "Only admin accounts manage accounts and access keys."


def _require_admin() -> None:
    if not current().is_admin:
        raise NotAdmin()


def _page(new_secret: dict[str, Any] | None = None, status: int = 200) -> tuple[str, int]:
    session = context.db()
    rows = []
    for account in accounts.list_accounts(session):
        rows.append(
            {
                **shapes.account_json(account),
                "access_keys": [shapes.access_key_json(k) for k in accounts.list_access_keys(session, account.id)],
            }
        )
    root_key = accounts.root_identity(context.settings()).access_key_id
    return render("accounts.html", section="accounts", rows=rows, new_secret=new_secret, root_key=root_key), status


def register(bp: Blueprint) -> None:
    @bp.get("/accounts", endpoint="accounts")
    def accounts_page() -> tuple[str, int]:
        _require_admin()
        return _page()

    @bp.post("/accounts")
    def create_account() -> tuple[str, int]:
        _require_admin()
        name = form_str("name", max_length=64)
        session = context.db()
        account, key = accounts.create_account(session, name, is_admin=request.form.get("is_admin") == "on")
        session.commit()
        # The secret is shown once, in this response; it is never shown again.
        return _page({"account": account.name, **shapes.access_key_json(key, with_secret=True)}, 201)

    @bp.post("/accounts/<account_id>/keys")
    def create_key(account_id: str) -> tuple[str, int]:
        _require_admin()
        session = context.db()
        key = accounts.create_access_key(session, account_id)
        session.commit()
        return _page({"account": account_id, **shapes.access_key_json(key, with_secret=True)}, 201)

    @bp.post("/keys/<access_key_id>/<action>")
    def key_action(access_key_id: str, action: str) -> BaseResponse | tuple[str, int]:
        _require_admin()
        session = context.db()
        root_key = accounts.root_identity(context.settings()).access_key_id
        if action == "rotate":
            new, change = accounts.rotate_access_key(session, access_key_id, root_access_key_id=root_key)
            session.commit()
            apply_key_change(change)
            return _page({"account": new.account_id, **shapes.access_key_json(new, with_secret=True)}, 201)
        if action not in ("disable", "enable"):
            raise NotFound()
        status = AccessKeyStatus.INACTIVE if action == "disable" else AccessKeyStatus.ACTIVE
        change = accounts.set_access_key_status(session, access_key_id, status, root_access_key_id=root_key)
        session.commit()
        apply_key_change(change)
        return redirect(url_for("console.accounts"))
