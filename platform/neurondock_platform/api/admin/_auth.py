"""Who is calling the admin API: SigV4 with an access key, or ``Authorization: Bearer <token>``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, g, request

from neurondock_platform.api import auth, context
from neurondock_platform.api.admin._errors import Forbidden, Unauthenticated
from neurondock_platform.api.admin._tokens import revocations
from neurondock_platform.models import Account
from neurondock_platform.services import accounts, sessions
from neurondock_platform.services.credentials import CredentialCache

CREDENTIALS_EXTENSION = "neurondock_credentials"


@dataclass(frozen=True)
class Caller:
    """The authenticated account behind one admin-API request."""

    account_id: str
    access_key_id: str
    is_admin: bool
    method: str  # "sigv4" or "bearer"


def credentials() -> CredentialCache:
    """Return the app's credential cache (shared with the SageMaker API)."""
    cache: CredentialCache = current_app.extensions[CREDENTIALS_EXTENSION]
    return cache


def apply_key_change(change: accounts.KeyChange) -> None:
    """Apply a committed key change in this process at once: drop the cached secrets, refuse revoked tokens.

    Other API processes notice within the credential cache's TTL (5 s) and the revocation refresh (1 s).
    """
    cache = credentials()
    cache.forget(change.key.access_key_id)
    for key_id in change.ended_temporary:
        cache.forget(key_id)
    if change.revocation is not None:
        revocations().note([change.revocation])


def authenticate_request() -> Caller:
    """Authenticate the current request and record the caller in ``g.admin_caller``."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        claims = sessions.verify_token(
            header[7:].strip(), credentials().lookup, purpose=sessions.PURPOSE_API, revoked=revocations().refuses
        )
        g.bearer_claims = claims
        account_id, key_id, method = claims.account_id, claims.access_key_id, "bearer"
        g.auth = context.AuthContext(
            account_id=account_id, access_key_id=key_id, region=context.settings().region, service="bearer"
        )
    elif header.startswith("AWS4-HMAC-SHA256"):
        ctx = auth.authenticate(request, services={auth.ADMIN})
        account_id, key_id, method = ctx.account_id, ctx.access_key_id, "sigv4"
    else:
        raise Unauthenticated(
            "Authentication required: sign the request with SigV4 (an access key) or send "
            "'Authorization: Bearer <token>' from POST /api/v1/tokens."
        )
    account = context.db().get(Account, account_id)
    if account is None:
        raise Unauthenticated("The access key belongs to no account.")
    caller = Caller(account_id=account_id, access_key_id=key_id, is_admin=account.is_admin, method=method)
    g.admin_caller = caller
    return caller


def caller() -> Caller:
    """Return the authenticated caller of this request."""
    value: Caller = g.admin_caller
    return value


def bearer_claims() -> sessions.Claims | None:
    """Return the claims of this request's bearer token (None when it was signed with SigV4)."""
    value: sessions.Claims | None = g.get("bearer_claims")
    return value


def require_admin() -> Caller:
    """Return the caller, or raise 403 when the account is not an admin."""
    who = caller()
    if not who.is_admin:
        raise Forbidden(message="This operation is for admin accounts only.")
    return who
