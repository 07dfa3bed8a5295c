"""The routing table: which replicas serve which endpoint, cached so serving survives DB hiccups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform.models import Endpoint, EndpointStatus, EndpointVariant, Replica, ReplicaState

log = logging.getLogger(__name__)

# The old fleet keeps serving while an endpoint changes (sagemaker-api.md §3).
SERVABLE = frozenset(
    {
        EndpointStatus.IN_SERVICE,
        EndpointStatus.UPDATING,
        EndpointStatus.SYSTEM_UPDATING,
        EndpointStatus.ROLLING_BACK,
        EndpointStatus.UPDATE_ROLLBACK_FAILED,
    }
)


@dataclass(frozen=True)
class ReplicaRoute:
    replica_id: int
    address: str
    # From the host agent's report; the metrics' ModelSetupTime.
    setup_seconds: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class VariantRoute:
    name: str
    weight: float
    replicas: tuple[ReplicaRoute, ...]
    # The variant's current instance count (InvocationsPerInstance); 0 when unknown.
    instances: int = 0

    @property
    def instance_count(self) -> int:
        """Instances serving the variant, never less than one."""
        return max(1, self.instances or len(self.replicas))


@dataclass(frozen=True)
class EndpointRoute:
    account_id: str
    name: str
    status: EndpointStatus
    variants: tuple[VariantRoute, ...]

    @property
    def servable(self) -> bool:
        return self.status in SERVABLE

    def variant(self, name: str) -> VariantRoute | None:
        return next((v for v in self.variants if v.name == name), None)


RouteKey = tuple[str, str]


def load_routes(session: Session) -> dict[RouteKey, EndpointRoute]:
    """Read every endpoint with its Ready replicas in one pass."""
    endpoints = session.execute(select(Endpoint.id, Endpoint.account_id, Endpoint.name, Endpoint.status)).all()
    variants = session.execute(
        select(
            EndpointVariant.id,
            EndpointVariant.endpoint_id,
            EndpointVariant.name,
            EndpointVariant.desired_weight,
            EndpointVariant.current_instance_count,
        ).order_by(EndpointVariant.position)
    ).all()
    replicas = session.execute(
        select(Replica.id, Replica.variant_id, Replica.address, Replica.extra, Replica.setup_seconds).where(
            Replica.state == ReplicaState.READY,
            Replica.desired_state == "running",
            Replica.address.is_not(None),
        )
    ).all()
    by_variant: dict[int, list[ReplicaRoute]] = {}
    for rid, variant_id, address, extra, setup_seconds in replicas:
        # Standby replicas (the green fleet of an update) take traffic only after the flip.
        if address and not (extra or {}).get("standby"):
            by_variant.setdefault(variant_id, []).append(ReplicaRoute(rid, address, setup_seconds))
    by_endpoint: dict[int, list[VariantRoute]] = {}
    for vid, endpoint_id, name, weight, instances in variants:
        by_endpoint.setdefault(endpoint_id, []).append(
            VariantRoute(
                name,
                float(weight),
                tuple(sorted(by_variant.get(vid, []), key=lambda r: r.replica_id)),
                int(instances or 0),
            )
        )
    return {
        (account_id, name): EndpointRoute(account_id, name, EndpointStatus(status), tuple(by_endpoint.get(eid, [])))
        for eid, account_id, name, status in endpoints
    }


class RoutingTable:
    """Routes refreshed in the background; a miss triggers an immediate (rate-limited) refresh."""

    def __init__(self, session_factory: sessionmaker[Session], refresh_interval: float = 0.25) -> None:
        self._factory = session_factory
        self._interval = refresh_interval
        self._routes: dict[RouteKey, EndpointRoute] = {}
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        # Called on the event loop with every freshly loaded table (the metrics note new replicas).
        self.listeners: list[Callable[[dict[RouteKey, EndpointRoute]], None]] = []

    @property
    def loaded(self) -> bool:
        """Whether a table has been read at least once (OIP server readiness)."""
        return self._loaded_at > 0

    def _load(self) -> dict[RouteKey, EndpointRoute]:
        with self._factory() as session:
            return load_routes(session)

    async def refresh(self, *, newer_than: float | None = None) -> None:
        """Reload the table, keeping the old one if the database fails.

        With ``newer_than``, skip the reload when one that started after that moment already finished
        (concurrent misses share one query).
        """
        async with self._lock:
            if newer_than is not None and self._loaded_at > newer_than:
                return
            started = time.monotonic()
            try:
                routes = await asyncio.to_thread(self._load)
            except Exception:
                # Endpoints keep serving from the cached table while the database is away.
                log.exception("routing table refresh failed; serving from the cached table")
                return
            if routes != self._routes:
                self._routes = routes
            self._loaded_at = started
            for listener in self.listeners:
                try:
                    listener(routes)
                except Exception:
                    log.exception("routing table listener failed")

    async def get(self, account_id: str, name: str) -> EndpointRoute | None:
        """Return the route of an endpoint, refreshing once if it is unknown, not serving or empty."""
        asked_at = time.monotonic()
        route = self._routes.get((account_id, name))
        if route is None or not route.servable or not any(v.replicas for v in route.variants):
            # Only a table loaded after this request arrived may answer "not there" or "not ready".
            await self.refresh(newer_than=asked_at)
            route = self._routes.get((account_id, name))
        return route

    def invalidate_replica(self, replica_id: int) -> None:
        """Drop a replica that failed a connection until the next refresh says otherwise."""
        changed: dict[RouteKey, EndpointRoute] = {}
        for key, route in self._routes.items():
            if any(r.replica_id == replica_id for v in route.variants for r in v.replicas):
                variants = tuple(
                    VariantRoute(
                        v.name, v.weight, tuple(r for r in v.replicas if r.replica_id != replica_id), v.instances
                    )
                    for v in route.variants
                )
                changed[key] = EndpointRoute(route.account_id, route.name, route.status, variants)
        if changed:
            self._routes = {**self._routes, **changed}

    async def _loop(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        """Start the background refresh on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the background refresh."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
