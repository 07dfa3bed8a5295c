"""Who is calling the data plane: SigV4 or an admin API bearer token, behind one small protocol.

Both front doors (the SageMaker runtime and OIP v2) call ``Authenticator.authenticate`` with the
request line, headers and body and get a ``Principal`` (the account whose endpoints it may invoke).
``SchemeAuthenticator`` picks the verifier by the ``Authorization`` scheme.

``SigV4Authenticator`` is the platform's one SigV4 verifier (``neurondock_platform.sigv4``), shared
with the Flask fronts together with its credential cache and signing-key cache. ``TokenAuthenticator``
checks ``Authorization: Bearer <token>`` with the admin API's own token verification
(``services.sessions``) and its revocation cache, so a token revoked on the admin API is refused here
by the same check: at once in the process that revoked it, within the cache's refresh elsewhere.
Clients that cannot sign SigV4 (``tritonclient``'s header plugins, KServe's clients, ``curl -H``)
use tokens (docs/oip.md, "Authentication").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from typing import NamedTuple, Protocol

from neurondock_platform import sigv4
from neurondock_platform.errors import IncompleteSignatureException, MissingAuthenticationTokenException
from neurondock_platform.services import sessions

SERVICE = "sagemaker"
log = logging.getLogger(__name__)


# Made per request: a NamedTuple is immutable like a frozen dataclass and made in 0.6 µs, not 1.0.
class Principal(NamedTuple):
    """An authenticated caller."""

    account_id: str
    access_key_id: str
    scheme: str = "sigv4"


# What an authenticator may look at (``headers`` have lower-case names): the verifier's own request.
IncomingRequest = sigv4.Request


class Authenticator(Protocol):
    """Turns a request into a Principal or raises an ``AuthError``."""

    async def authenticate(self, request: IncomingRequest) -> Principal: ...


class SchemeAuthenticator:
    """Dispatch on the ``Authorization`` scheme (``AWS4-HMAC-SHA256``, ``Bearer`` …; any case)."""

    def __init__(self, by_scheme: Mapping[str, Authenticator]) -> None:
        self.by_scheme = dict(by_scheme)
        self._lower = {name.lower(): verifier for name, verifier in by_scheme.items()}

    async def authenticate(self, request: IncomingRequest) -> Principal:
        value = request.headers.get("authorization")
        if not value:
            raise MissingAuthenticationTokenException()
        scheme = value.split(None, 1)[0]
        verifier = self._lower.get(scheme.lower())
        if verifier is None:
            raise IncompleteSignatureException(
                f"Unsupported authorization scheme {scheme[:32]!r}; use one of: {', '.join(self.by_scheme)}."
            )
        return await verifier.authenticate(request)


class SigV4Authenticator:
    """AWS Signature Version 4 for service ``sagemaker``: the platform's one verifier, on the event loop."""

    def __init__(self, verifier: sigv4.Verifier, services: Collection[str] = (SERVICE,)) -> None:
        self.verifier = verifier
        self.services = frozenset(services)

    async def authenticate(self, request: IncomingRequest) -> Principal:
        verified = await self.verifier.averify(request, services=self.services)
        return Principal(verified.account_id, verified.access_key_id)


class Revocations(Protocol):
    """The revocation list a token check consults (``services.revocations.RevocationCache``)."""

    def refuses(self, claims: sessions.Claims) -> bool: ...

    def current(self) -> bool: ...

    def due(self) -> bool: ...

    def refresh_ahead(self) -> None: ...


class _NotCached(Exception):
    """The token's access key is not in the credential cache: check it where the database may be read."""


class TokenAuthenticator:
    """``Authorization: Bearer <token>`` with the admin API's revocable tokens (``services.sessions``).

    The check is the admin API's own (``sessions.verify_token`` with the revocation cache). It runs on
    the event loop when it would read no database, i.e. when the token's key is in the credential cache
    and the revocation list was refreshed within its period; otherwise in a thread. Past half the
    period a background thread refreshes the list ahead, so steady traffic never waits for it. A
    thread hop for every token cost ~600 µs at p50 and ~16 ms at p99 of OverheadLatency here
    (tests/benchmarks/test_bench_oip_auth.py).
    """

    def __init__(self, credentials: sigv4.CredentialSource, revocations: Revocations) -> None:
        self.credentials = credentials
        self.revocations = revocations
        self._ahead: asyncio.Task[None] | None = None

    def _refresh_ahead(self) -> None:
        try:
            self.revocations.refresh_ahead()
        except Exception:
            # The next check that finds the list out of date refreshes it (or fails) in its own thread.
            log.exception("refreshing the token revocation list ahead failed")

    def _cached(self, access_key_id: str) -> sigv4.Credential | None:
        credential = self.credentials.cached(access_key_id)
        if credential is None:
            raise _NotCached()
        return credential

    def _verify(self, token: str, lookup: sessions.Lookup) -> sessions.Claims:
        return sessions.verify_token(token, lookup, purpose=sessions.PURPOSE_API, revoked=self.revocations.refuses)

    async def authenticate(self, request: IncomingRequest) -> Principal:
        token = request.headers.get("authorization", "").split(None, 1)[-1].strip()
        revocations = self.revocations
        try:
            if not revocations.current():
                raise _NotCached()
            claims = self._verify(token, self._cached)
        except _NotCached:
            claims = await asyncio.to_thread(self._verify, token, self.credentials.lookup)
        if revocations.due() and (self._ahead is None or self._ahead.done()):
            self._ahead = asyncio.get_running_loop().create_task(asyncio.to_thread(self._refresh_ahead))
        return Principal(claims.account_id, claims.access_key_id, scheme="bearer")


def default_authenticator(verifier: sigv4.Verifier, revocations: Revocations | None = None) -> SchemeAuthenticator:
    """Who may invoke endpoints: SigV4 (service ``sagemaker``), or an admin API token when ``revocations`` is given.

    Tokens are accepted only together with the revocation check, so no front door can take a token
    that the admin API would refuse.
    """
    schemes: dict[str, Authenticator] = {sigv4.ALGORITHM: SigV4Authenticator(verifier)}
    if revocations is not None:
        schemes["Bearer"] = TokenAuthenticator(verifier.credentials, revocations)
    return SchemeAuthenticator(schemes)


def metrics_authenticator(verifier: sigv4.Verifier, revocations: Revocations | None = None) -> SchemeAuthenticator:
    """Who may read ``/metrics``: SigV4 (service ``sagemaker`` or ``neurondock``), or an admin API token."""
    schemes: dict[str, Authenticator] = {
        sigv4.ALGORITHM: SigV4Authenticator(verifier, services=(SERVICE, "neurondock"))
    }
    if revocations is not None:
        schemes["Bearer"] = TokenAuthenticator(verifier.credentials, revocations)
    return SchemeAuthenticator(schemes)
