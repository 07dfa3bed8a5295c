"""The web console at ``/console``: server-rendered pages over the same services as the APIs.

Pages: fleet (neuron-top style, emulated), endpoints (list, create, detail with progress, charts,
errors, logs, test invoke, scale, delete), models (list, create from an uploaded file, detail),
compilation jobs (compile report with projected numbers labelled), costs, and accounts (admins).
JavaScript is local (``static/console.js``) plus uPlot vendored from npm (``static/vendor/uplot``).
Sessions and CSRF: see ``_session``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from neurondock_platform.api import context
from neurondock_platform.console import _accounts, _endpoints, _pages, _session
from neurondock_platform.console._format import FILTERS
from neurondock_platform.errors import NotFoundError, PlatformError, ResourceNotFound
from neurondock_platform.services import objects
from neurondock_platform.services.credentials import CredentialCache

log = logging.getLogger(__name__)

NAME = "console"
_PUBLIC = {f"{NAME}.sign_in", f"{NAME}.static", f"{NAME}.favicon"}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

__all__ = ["NAME", "make_blueprint"]


def _wants_json() -> bool:
    return request.path.endswith(".json") or request.headers.get("X-Requested-With") == "fetch"


def make_blueprint(credentials: CredentialCache) -> Blueprint:
    """Return the console blueprint (mount it at ``/console``)."""
    bp = Blueprint(NAME, __name__, template_folder="templates", static_folder="static", static_url_path="/static")

    @bp.record_once
    def _filters(state: Any) -> None:
        state.app.jinja_env.filters.update({f"nd_{k}": v for k, v in FILTERS.items()})

    @bp.before_request
    def require_session() -> BaseResponse | None:
        if request.endpoint in _PUBLIC:
            return None
        if _session.load() is not None:
            if request.method == "POST":
                _session.check_csrf()
            return None
        if _wants_json():
            return Response('{"error": "not signed in"}', status=401, content_type="application/json")
        target = request.full_path if request.query_string else request.path
        return redirect(url_for(f"{NAME}.sign_in", next=target))

    @bp.after_request
    def headers(response: Response) -> BaseResponse:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if request.endpoint != f"{NAME}.static":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @bp.get("/favicon.ico")
    def favicon() -> BaseResponse:
        return redirect(url_for(f"{NAME}.static", filename="favicon.svg"))

    _pages.register(bp)
    _endpoints.register(bp)
    _accounts.register(bp)

    @bp.errorhandler(Exception)
    def handle_error(err: Exception) -> Any:
        context.db().rollback()
        status, title, message = 500, "Something went wrong", "An internal error occurred."
        if isinstance(err, _session.CsrfError):
            status, title = 400, "Form check failed"
            message = (
                "The form expired or did not come from this console (CSRF check failed). Reload the page and try again."
            )
        elif isinstance(err, NotFoundError | ResourceNotFound | objects.NoSuchBucket | objects.NoSuchKey):
            status, title, message = 404, "Not found", err.message
        elif isinstance(err, PlatformError) and 400 <= err.http_status < 500:
            status, title, message = err.http_status, "Request refused", err.message
        elif isinstance(err, PlatformError) and err.http_status == 501:
            status, title, message = 501, "Not available here", err.message
        elif isinstance(err, HTTPException):
            status, title, message = err.code or 500, err.name, err.description or ""
        else:
            log.exception("console error on %s %s", request.method, request.path)
        if _wants_json():
            return Response(json.dumps({"error": message}), status=status, content_type="application/json")
        extra: dict[str, Any] = {}
        me = g.get("console")
        if me is not None:
            extra = {"me": me, "csrf_field": _session.CSRF_FIELD, "csrf_token": me.csrf_token, "section": ""}
        page = render_template(
            "console/error.html", status=status, title=title, message=message, signed_in=me is not None, **extra
        )
        return page, status

    return bp
