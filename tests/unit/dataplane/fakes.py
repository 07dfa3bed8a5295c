"""Stand-ins the data plane tests share: a routing table without a database, and an ASGI call."""

from __future__ import annotations

from typing import Any

from neurondock_platform.config import Settings
from neurondock_platform.dataplane.routing import EndpointRoute
from neurondock_platform.services.credentials import CredentialCache
from neurondock_platform.sigv4 import Verifier


def verifier(settings: Settings, session_factory: Any) -> Verifier:
    """The verifier the app factory builds: the settings' region, over a credential cache."""
    return Verifier(CredentialCache(session_factory), region=settings.region, skew_seconds=settings.clock_skew_seconds)


class StaticTable:
    """A routing table that never touches a database."""

    def __init__(self, routes: dict[tuple[str, str], EndpointRoute]) -> None:
        self.routes = routes
        self.invalidated: list[int] = []
        self.fresh_reads: list[float] = []
        self.listeners: list[Any] = []
        self.loaded = True

    async def get(self, account_id: str, name: str) -> EndpointRoute | None:
        return self.routes.get((account_id, name))

    async def refresh(self, *, newer_than: float | None = None) -> None: ...

    async def get_fresh(self, account_id: str, name: str, *, newer_than: float) -> EndpointRoute | None:
        self.fresh_reads.append(newer_than)
        return self.routes.get((account_id, name))

    def routes_named(self, name: str) -> list[EndpointRoute]:
        return [route for (_, route_name), route in self.routes.items() if route_name == name]

    def invalidate_replica(self, replica_id: int) -> None:
        self.invalidated.append(replica_id)

    def start(self) -> None: ...

    async def stop(self) -> None: ...


async def asgi_call(
    app: Any, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send one request through an ASGI app in 64 KiB body chunks; return status, headers and body."""
    hdrs = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    sent: list[dict[str, Any]] = []
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": path, "query_string": b"", "headers": hdrs}, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(bytes(m.get("body", b"")) for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, payload
