"""Bearer tokens and console sessions, issued for an access key and signed with that key's secret.

A token is ``nd1.<payload>.<signature>``: the payload (base64url JSON) names the access key, what the
token is for (``api`` or ``console``), when it was issued and when it expires, and carries a random
token id (``jti``); the signature is an HMAC-SHA256 over the payload keyed by a key derived from the
access key's secret. Every API process can verify a token on its own, and disabling or rotating the
access key ends every token issued for it at once.

One token can also be revoked before it expires (sign-out, ``POST /api/v1/tokens/revoke``), and so can
every token of one key without touching the key: ``services.revocations`` stores those in the
``revoked_tokens`` table and each process checks a cached copy of it, so a revoked token is refused
everywhere within about a second (``Settings.token_revocation_refresh_seconds``) and at once by the
process that revoked it. Lifetimes stay short (the default is 12 hours, the maximum 36, as STS
session tokens), which also bounds how long a revocation row is kept.

CSRF tokens for console forms are derived from the session token the same way, so a form posted
from another site (which cannot read the session cookie) cannot carry a valid one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from neurondock_platform.errors import AuthError
from neurondock_platform.sigv4 import Credential

PREFIX = "nd1"
PURPOSE_API = "api"
PURPOSE_CONSOLE = "console"
DEFAULT_TTL_SECONDS = 12 * 3600
MIN_TTL_SECONDS = 60
MAX_TTL_SECONDS = 36 * 3600
_DOMAIN = b"neurondock-token-v1"
_CSRF_DOMAIN = b"neurondock-csrf-v1"

Lookup = Callable[[str], Credential | None]


class InvalidTokenError(AuthError):
    """A bearer token or session that is malformed, forged, expired or whose key was disabled."""

    code: ClassVar[str] = "InvalidToken"
    http_status: ClassVar[int] = 401
    fmt: ClassVar[str] = "The bearer token is invalid or has expired: {reason}."


class InvalidCredentialsError(AuthError):
    """An access key id and secret that do not name an active key."""

    code: ClassVar[str] = "InvalidCredentials"
    http_status: ClassVar[int] = 401
    fmt: ClassVar[str] = "The access key id or secret access key is wrong, or the key is not active."


@dataclass(frozen=True)
class Claims:
    """What a verified token says about its holder."""

    access_key_id: str
    account_id: str
    purpose: str
    issued_at: int
    expires_at: int
    nonce: str
    jti: str


# Tells whether verified claims were revoked (``services.revocations.RevocationCache.refuses``).
RevokedCheck = Callable[[Claims], bool]


@dataclass(frozen=True)
class IssuedToken:
    """A new token and its claims."""

    value: str
    claims: Claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signing_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _DOMAIN, hashlib.sha256).digest()


def _sign(secret: str, payload: str) -> str:
    return _b64(hmac.new(_signing_key(secret), payload.encode(), hashlib.sha256).digest())


def clamp_ttl(ttl_seconds: int | None) -> int:
    """Return a token lifetime within the allowed range (the default when None)."""
    if ttl_seconds is None:
        return DEFAULT_TTL_SECONDS
    return max(MIN_TTL_SECONDS, min(MAX_TTL_SECONDS, int(ttl_seconds)))


def issue_token(
    access_key_id: str,
    credential: Credential,
    *,
    purpose: str = PURPOSE_API,
    ttl_seconds: int | None = None,
    now: float | None = None,
) -> IssuedToken:
    """Return a token for an access key whose secret the caller has already proven."""
    issued = int(now if now is not None else time.time())
    claims = Claims(
        access_key_id=access_key_id,
        account_id=credential.account_id,
        purpose=purpose,
        issued_at=issued,
        expires_at=issued + clamp_ttl(ttl_seconds),
        nonce=secrets.token_urlsafe(12),
        jti=secrets.token_urlsafe(16),
    )
    body = {
        "k": claims.access_key_id,
        "p": claims.purpose,
        "iat": claims.issued_at,
        "exp": claims.expires_at,
        "n": claims.nonce,
        "jti": claims.jti,
    }
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return IssuedToken(f"{PREFIX}.{payload}.{_sign(credential.secret_access_key, payload)}", claims)


def signed_claims(value: str, lookup: Lookup) -> Claims:
    """Return the claims of a correctly signed token, whatever its purpose or expiry; raise InvalidTokenError."""
    parts = value.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise InvalidTokenError(reason="it is not a neurondock token")
    _, payload, signature = parts
    try:
        body: Any = json.loads(_unb64(payload))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidTokenError(reason="its payload cannot be read") from exc
    if not isinstance(body, dict) or not isinstance(body.get("k"), str) or not isinstance(body.get("exp"), int):
        raise InvalidTokenError(reason="its payload cannot be read")
    credential = lookup(body["k"]) if len(body["k"]) <= 128 else None
    # Tokens belong to long-term keys only: temporary (STS) keys end sooner than any token would.
    if credential is None or credential.temporary:
        raise InvalidTokenError(reason="its access key is unknown or no longer active")
    if not hmac.compare_digest(_sign(credential.secret_access_key, payload), signature):
        raise InvalidTokenError(reason="its signature does not match")
    jti = body.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= 64:
        # Tokens from before revocation existed carry no id; they could never be revoked, so refuse them.
        raise InvalidTokenError(reason="it predates revocable tokens; sign in again")
    return Claims(
        access_key_id=body["k"],
        account_id=credential.account_id,
        purpose=str(body.get("p")),
        issued_at=int(body.get("iat") or 0),
        expires_at=int(body["exp"]),
        nonce=str(body.get("n") or ""),
        jti=jti,
    )


def verify_token(
    value: str, lookup: Lookup, *, purpose: str, revoked: RevokedCheck | None, now: float | None = None
) -> Claims:
    """Return the claims of a valid, unrevoked token for ``purpose``; raise InvalidTokenError otherwise.

    ``revoked`` tells whether the claims were revoked; pass None only where there is no revocation list
    (offline tools and tests).
    """
    claims = signed_claims(value, lookup)
    if claims.purpose != purpose:
        raise InvalidTokenError(reason=f"it was not issued for {purpose} use")
    current = int(now if now is not None else time.time())
    if claims.expires_at <= current:
        raise InvalidTokenError(reason="it has expired")
    if revoked is not None and revoked(claims):
        raise InvalidTokenError(reason="it has been revoked")
    return claims


def check_secret(access_key_id: str, secret_access_key: str, lookup: Lookup) -> Credential:
    """Return the credential when the key pair is right and active; raise InvalidCredentialsError."""
    credential = lookup(access_key_id) if 0 < len(access_key_id) <= 128 else None
    if credential is not None and credential.temporary:
        credential = None  # temporary keys sign requests with their session token; they do not sign in
    # Compare even when the key is unknown so timing does not tell which keys exist.
    expected = credential.secret_access_key if credential is not None else secrets.token_urlsafe(30)
    if not hmac.compare_digest(expected.encode(), secret_access_key.encode()) or credential is None:
        raise InvalidCredentialsError()
    return credential


def csrf_token(credential: Credential, claims: Claims) -> str:
    """Return the CSRF token of one console session."""
    message = f"{claims.access_key_id}|{claims.nonce}|{claims.issued_at}".encode()
    key = hmac.new(_signing_key(credential.secret_access_key), _CSRF_DOMAIN, hashlib.sha256).digest()
    return _b64(hmac.new(key, message, hashlib.sha256).digest())


def check_csrf(credential: Credential, claims: Claims, presented: str | None) -> bool:
    """Tell whether a form's CSRF token belongs to this session."""
    return bool(presented) and hmac.compare_digest(csrf_token(credential, claims), str(presented))
