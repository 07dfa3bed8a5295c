"""SigV4 authentication of Flask requests against stored access keys."""

from __future__ import annotations

import threading
import time

from flask import Request, g
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform import sigv4
from neurondock_platform.api import context
from neurondock_platform.services.accounts import lookup_credential


class CredentialCache:
    """Look up secrets with a short TTL so a hot path does not hit the database per request."""

    def __init__(self, session_factory: sessionmaker[Session], ttl: float = 5.0) -> None:
        self._factory = session_factory
        self._ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, sigv4.Credential | None]] = {}

    def cached(self, access_key_id: str) -> sigv4.Credential | None:
        """Return a fresh cached credential, or None when the database must be asked."""
        with self._lock:
            hit = self._entries.get(access_key_id)
        if hit is not None and time.monotonic() - hit[0] < self._ttl:
            return hit[1]
        return None

    def forget(self, access_key_id: str) -> None:
        """Drop one key so a change (disabled, rotated) takes effect in this process at once."""
        with self._lock:
            self._entries.pop(access_key_id, None)

    def lookup(self, access_key_id: str) -> sigv4.Credential | None:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(access_key_id)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        with self._factory() as session:
            credential = lookup_credential(session, access_key_id)
        with self._lock:
            self._entries[access_key_id] = (now, credential)
        return credential


def authenticate(
    request: Request, cache: CredentialCache, *, path: str | None = None, streamed_body: bool = False
) -> context.AuthContext:
    """Verify the request's signature and record the caller in ``g.auth``.

    ``streamed_body``: the caller (S3) checks the body against ``X-Amz-Content-SHA256`` while it
    streams it; everywhere else the body is read here and must match a declared hash.
    """
    signed, credential = sigv4.verify(
        method=request.method,
        path=path if path is not None else request.path,
        query=request.query_string.decode("latin-1"),
        headers=dict(request.headers.items()),
        body=None if streamed_body and request.headers.get("x-amz-content-sha256") else request.get_data(cache=True),
        lookup=cache.lookup,
        skew_seconds=context.settings().clock_skew_seconds,
    )
    ctx = context.AuthContext(
        account_id=credential.account_id,
        access_key_id=signed.access_key_id,
        region=signed.region,
        service=signed.service,
    )
    g.auth = ctx
    return ctx
