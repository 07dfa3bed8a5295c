"""Console sessions: a signed cookie per sign-in, and a CSRF token on every form.

The cookie holds a console token (``services.sessions``) signed with the access key's secret, so
disabling or rotating the key ends its sessions. Signing out revokes the token server-side
(``services.revocations``), so a copy of the cookie stops working too: at once in this process,
within about a second in the others. The cookie is HttpOnly, SameSite=Lax, scoped to ``/console``
and Secure when the console is served over https. Every POST must carry the session's
CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``); the sign-in form, which has no
session yet, uses a double-submit cookie instead.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from flask import current_app, g, request
from werkzeug.wrappers import Response as BaseResponse

from neurondock_platform.api import context
from neurondock_platform.api.admin._tokens import revocations, revoke
from neurondock_platform.models import Account
from neurondock_platform.services import sessions
from neurondock_platform.services.credentials import CredentialCache
from neurondock_platform.sigv4 import Credential

COOKIE = "nd_session"
PRE_CSRF_COOKIE = "nd_signin_csrf"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


class CsrfError(Exception):
    """A state-changing request without this session's CSRF token."""


@dataclass(frozen=True)
class ConsoleSession:
    """The signed-in account behind one console request."""

    claims: sessions.Claims
    credential: Credential
    account_id: str
    account_name: str
    is_admin: bool
    csrf_token: str

    @property
    def access_key_id(self) -> str:
        return self.claims.access_key_id


def credentials() -> CredentialCache:
    cache: CredentialCache = current_app.extensions["neurondock_credentials"]
    return cache


def secure() -> bool:
    """Whether cookies must be Secure: the console is reached (or published) over https."""
    return request.is_secure or context.settings().public_url.startswith("https://")


def load() -> ConsoleSession | None:
    """Return the session of this request's cookie, or None when there is no valid one."""
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    lookup = credentials().lookup
    try:
        claims = sessions.verify_token(value, lookup, purpose=sessions.PURPOSE_CONSOLE, revoked=revocations().refuses)
    except sessions.InvalidTokenError:
        return None
    credential = lookup(claims.access_key_id)
    account = context.db().get(Account, claims.account_id)
    if credential is None or account is None:
        return None
    session = ConsoleSession(
        claims=claims,
        credential=credential,
        account_id=account.id,
        account_name=account.name,
        is_admin=account.is_admin,
        csrf_token=sessions.csrf_token(credential, claims),
    )
    g.console = session
    return session


def current() -> ConsoleSession:
    """Return this request's session (the blueprint guarantees one on signed-in pages)."""
    value: ConsoleSession = g.console
    return value


def check_csrf() -> None:
    """Raise CsrfError unless the request carries this session's CSRF token."""
    session: ConsoleSession | None = g.get("console")
    presented = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if session is None or not sessions.check_csrf(session.credential, session.claims, presented):
        raise CsrfError()


def start(response: BaseResponse, access_key_id: str, credential: Credential) -> None:
    """Sign in: set the session cookie on ``response``."""
    issued = sessions.issue_token(access_key_id, credential, purpose=sessions.PURPOSE_CONSOLE)
    response.set_cookie(
        COOKIE,
        issued.value,
        max_age=issued.claims.expires_at - issued.claims.issued_at,
        path=COOKIE_PATH,
        secure=secure(),
        httponly=True,
        samesite="Lax",
    )
    response.delete_cookie(PRE_CSRF_COOKIE, path=COOKIE_PATH)


def end(response: BaseResponse) -> None:
    """Sign out: revoke this request's session token server-side and drop the cookie."""
    session: ConsoleSession | None = g.get("console")
    if session is not None:
        revoke(session.claims)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, secure=secure(), httponly=True, samesite="Lax")


def sign_in_token() -> str:
    """Return the sign-in form's CSRF token (the value of the pre-session cookie, made if missing)."""
    existing = request.cookies.get(PRE_CSRF_COOKIE)
    if existing and 20 <= len(existing) <= 64:
        return existing
    if "pre_csrf" not in g:
        g.pre_csrf = secrets.token_urlsafe(24)
    token: str = g.pre_csrf
    return token


def set_sign_in_cookie(response: BaseResponse, token: str) -> None:
    response.set_cookie(
        PRE_CSRF_COOKIE, token, max_age=3600, path=COOKIE_PATH, secure=secure(), httponly=True, samesite="Strict"
    )


def check_sign_in_csrf() -> None:
    """The sign-in form's double-submit check: form field and cookie must be present and equal."""
    cookie = request.cookies.get(PRE_CSRF_COOKIE, "")
    field = request.form.get(CSRF_FIELD, "")
    if not cookie or not field or not hmac.compare_digest(cookie, field):
        raise CsrfError()
