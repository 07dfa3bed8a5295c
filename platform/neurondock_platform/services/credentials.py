"""The credential cache every front door verifies signatures against (SigV4, bearer tokens, sessions).

It holds both kinds of keys: long-term access keys (``AKND…``, ``services.accounts``) and the
temporary credentials STS issues (``ASIA…``, ``services.sts``), whose expiry the verifier checks on
every request.

One per process, made by the app factory and handed to the Flask front and the ASGI data plane alike.
Secrets are cached for ``ttl`` seconds so the hot path does not query the database per request; a
change made in this process (a key disabled, rotated) is applied at once with ``forget``, and other
processes see it within the TTL.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform.services import sts
from neurondock_platform.services.accounts import lookup_credential
from neurondock_platform.sigv4 import Credential

DEFAULT_TTL_SECONDS = 5.0
# Unknown key ids are cached too (as None): bound how many a caller inventing ids can make us keep.
MAX_ENTRIES = 10_000


class CredentialCache:
    """Look up secrets with a short TTL so a hot path does not hit the database per request."""

    def __init__(self, session_factory: sessionmaker[Session], ttl: float = DEFAULT_TTL_SECONDS) -> None:
        self._factory = session_factory
        self._ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Credential | None]] = {}

    def cached(self, access_key_id: str) -> Credential | None:
        """Return a fresh cached credential, or None when the database must be asked."""
        hit = self._entries.get(access_key_id)  # a dict read is atomic; no lock on the hot path
        if hit is not None and time.monotonic() - hit[0] < self._ttl:
            return hit[1]
        return None

    def forget(self, access_key_id: str) -> None:
        """Drop one key so a change (disabled, rotated) takes effect in this process at once."""
        with self._lock:
            self._entries.pop(access_key_id, None)

    def lookup(self, access_key_id: str) -> Credential | None:
        """Return the credential of an active access key (cached), or None."""
        now = time.monotonic()
        hit = self._entries.get(access_key_id)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        with self._factory() as session:
            if access_key_id.startswith(sts.ACCESS_KEY_PREFIX):
                credential = sts.lookup_temporary(session, access_key_id)
            else:
                credential = lookup_credential(session, access_key_id)
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries = {k: v for k, v in self._entries.items() if now - v[0] < self._ttl}
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
            self._entries[access_key_id] = (now, credential)
        return credential
