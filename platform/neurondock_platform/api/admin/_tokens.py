"""Per-process token state shared by the admin API and the console: revocation cache and sign-in limiter.

Both are made on first use and kept in ``app.extensions``; tests may put their own there first (a
limiter with a fake clock, say).
"""

from __future__ import annotations

import re
import threading

from flask import Flask, Response, current_app, request

from neurondock_platform.api import context
from neurondock_platform.api.admin._errors import json_body
from neurondock_platform.models import RevokedToken
from neurondock_platform.services import revocations as revocation_service
from neurondock_platform.services import sessions
from neurondock_platform.services.rate_limits import SignInLimiter, ThrottlingException
from neurondock_platform.services.revocations import RevocationCache

REVOCATIONS_EXTENSION = "neurondock_revocations"
SIGN_IN_LIMITER_EXTENSION = "neurondock_sign_in_limiter"
_SIGV4_KEY = re.compile(r"Credential=([^/\s,]{1,128})/")
_make_lock = threading.Lock()


def revocation_cache_of(app: Flask) -> RevocationCache:
    """Return an app's revocation cache (made on first use); the data plane checks tokens with it too."""
    extensions = app.extensions
    with _make_lock:
        cache = extensions.get(REVOCATIONS_EXTENSION)
        if cache is None:
            state: context.PlatformState = extensions[context.EXTENSION]
            cache = RevocationCache(
                state.session_factory, refresh_seconds=state.settings.token_revocation_refresh_seconds
            )
            extensions[REVOCATIONS_EXTENSION] = cache
    value: RevocationCache = cache
    return value


def revocations() -> RevocationCache:
    """Return this process's revocation cache."""
    return revocation_cache_of(current_app)


def sign_in_limiter() -> SignInLimiter:
    """Return this process's limiter of sign-in attempts (console and ``POST /tokens``)."""
    extensions = current_app.extensions
    with _make_lock:
        limiter = extensions.get(SIGN_IN_LIMITER_EXTENSION)
        if limiter is None:
            limiter = SignInLimiter.from_settings(context.settings())
            extensions[SIGN_IN_LIMITER_EXTENSION] = limiter
    value: SignInLimiter = limiter
    return value


def client_address() -> str:
    """Return the address the request came from (a reverse proxy's own, behind one)."""
    return request.remote_addr or "unknown"


def sigv4_key_id() -> str | None:
    """Return the access key id a SigV4 Authorization header names, unverified."""
    match = _SIGV4_KEY.search(request.headers.get("Authorization", ""))
    return match.group(1) if match else None


def throttled_response(err: ThrottlingException) -> Response:
    """Return the 429 of the REST API: AWS's throttling body (plus the admin API's error member)."""
    payload = {"__type": err.code, "message": err.message, "error": {"code": err.code, "message": err.message}}
    return json_body(payload, status=err.http_status, headers={"Retry-After": str(err.retry_after)})


def revoke(claims: sessions.Claims) -> RevokedToken:
    """Revoke one token, commit, and refuse it in this process at once."""
    session = context.db()
    row = revocation_service.revoke_token(session, claims)
    session.commit()
    revocations().note([row])
    return row


def revoke_key(access_key_id: str, account_id: str) -> RevokedToken:
    """Revoke every token of an access key issued so far, commit, and apply it in this process at once."""
    session = context.db()
    row = revocation_service.revoke_key_tokens(session, access_key_id, account_id)
    session.commit()
    revocations().note([row])
    return row
