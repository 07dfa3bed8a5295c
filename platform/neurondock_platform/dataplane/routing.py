"""The routing table: which replicas serve which endpoint, cached so serving survives DB hiccups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform import wakeup
from neurondock_platform.config import SHARED_DB_IDLE_POLL
from neurondock_platform.dataplane.looptask import LoopTask
from neurondock_platform.models import Endpoint, EndpointStatus, EndpointVariant, Replica, ReplicaState
from neurondock_platform.services.data_capture import CaptureSettings

log = logging.getLogger(__name__)

# The old fleet keeps serving while an endpoint changes (docs/sagemaker-api.md, "Lifecycles").
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
    # The replica process's channel key (dataplane/protocol.py); a new process has a new one.
    channel_key: str = field(default="", repr=False)


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
    # The endpoint's live DataCaptureConfig, when it has one that can capture (dataplane/capture.py).
    capture: CaptureSettings | None = None

    @property
    def servable(self) -> bool:
        return self.status in SERVABLE

    def variant(self, name: str) -> VariantRoute | None:
        return next((v for v in self.variants if v.name == name), None)


RouteKey = tuple[str, str]

# How long a replica this API process saw fail stays out of its way: the one duration for both kinds.
# A replica that failed a connection stays out of this process's table, unless the database reports it
# at another address first; a host that vanished (no RST) is noticed by the control plane only after
# its heartbeat timeout (15 s by default), and meanwhile every request routed there would first wait
# out a connect timeout before moving on. A variant whose every replica is suspect keeps them all:
# better a try than a refusal. A replica that let a request run past the model timeout gets no request
# at all from the router until a new process serves it (dataplane/router.py), long enough for the
# agent to replace a hung one.
SUSPECT_SECONDS = 15.0

# Even when the database reports no change, the table is read in full this often (a safety net).
FULL_RELOAD_SECONDS = 30.0

# An unrung look on SQLite, where every writer is on this machine and rings: it only covers a lost ring,
# and a lost ring costs the table less than it costs the other listeners (a miss refreshes at once, a
# replica that went away turns suspect on its first failed request), so once a minute, not every 10 s.
LOCAL_DB_ROUTES_POLL = 60.0

# What every row the table is built from looks like, cheaply: PostgreSQL gives each row version the
# id of the transaction that wrote it (xmin), so any insert, update or delete committed to these tables
# changes a count or a sum, in whatever order the transactions commit (unlike a max(updated_at), which
# misses a write committed late with an earlier stamp or from a host whose clock lags). Reading it scans
# the three tables' rows without building anything: docs/scaling.md has its cost beside a full read.
_SIGNATURE = text(
    "select (select count(*) from endpoints), (select coalesce(sum(xmin::text::bigint), 0) from endpoints),"
    " (select count(*) from endpoint_variants),"
    " (select coalesce(sum(xmin::text::bigint), 0) from endpoint_variants),"
    " (select count(*) from replicas), (select coalesce(sum(xmin::text::bigint), 0) from replicas)"
)


def change_signature(session: Session) -> tuple[int, ...] | None:
    """A value that changes whenever a row the table reads changes; None where the database has none (SQLite)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    row = session.execute(_SIGNATURE).one()
    return tuple(int(v) for v in row)


def load_routes(session: Session) -> dict[RouteKey, EndpointRoute]:
    """Read every endpoint with its Ready replicas in one pass."""
    endpoints = session.execute(
        select(Endpoint.id, Endpoint.account_id, Endpoint.name, Endpoint.status, Endpoint.extra["DataCaptureConfig"])
    ).all()
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
        select(
            Replica.id, Replica.variant_id, Replica.address, Replica.extra, Replica.setup_seconds, Replica.channel_key
        ).where(
            Replica.state == ReplicaState.READY,
            Replica.desired_state == "running",
            Replica.address.is_not(None),
        )
    ).all()
    by_variant: dict[int, list[ReplicaRoute]] = {}
    for rid, variant_id, address, extra, setup_seconds, key in replicas:
        # Standby replicas (the green fleet of an update) take traffic only after the flip; a row
        # without a key was written by an agent that predates the channel handshake: no router can reach it.
        if address and key and not (extra or {}).get("standby"):
            by_variant.setdefault(variant_id, []).append(ReplicaRoute(rid, address, setup_seconds, key))
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
        (account_id, name): EndpointRoute(
            account_id, name, EndpointStatus(status), tuple(by_endpoint.get(eid, [])), _capture(capture)
        )
        for eid, account_id, name, status, capture in endpoints
    }


def _capture(config: Any) -> CaptureSettings | None:
    if not isinstance(config, dict):
        return None
    try:
        settings = CaptureSettings.from_config(config)
    except (KeyError, TypeError, ValueError):
        log.warning("ignoring an unreadable DataCaptureConfig %r", config)
        return None
    return settings if settings.active else None


class RoutingTable:
    """Routes refreshed in the background; a miss triggers an immediate (rate-limited) refresh.

    With ``bells`` (a doorbell directory, ``wakeup.py``), a refresh runs as soon as a replica,
    endpoint or variant row changes on this host, when a suspect replica's time is up, and every
    ``idle_interval`` otherwise (by default each second on PostgreSQL, ``LOCAL_DB_ROUTES_POLL`` on SQLite);
    without, every ``refresh_interval``.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        refresh_interval: float = 0.25,
        *,
        bells: Path | None = None,
        idle_interval: float | None = None,
    ) -> None:
        self._factory = session_factory
        self._interval = refresh_interval
        self._bells = bells
        self._idle_interval = idle_interval
        self._routes: dict[RouteKey, EndpointRoute] = {}
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()
        self._refresher = LoopTask(self._loop)
        # Set to make the doorbell loop look now (its bell, or a new suspect whose return it must time).
        self._look: asyncio.Event | None = None
        # Called on the event loop with every freshly loaded table (the metrics note new replicas).
        self.listeners: list[Callable[[dict[RouteKey, EndpointRoute]], None]] = []
        # replica id → (the address it failed at, until when it stays out)
        self._suspects: dict[int, tuple[str, float]] = {}
        # The table as read, before suspects are taken out; what the database looked like then, and when.
        self._read: dict[RouteKey, EndpointRoute] = {}
        self._signature: tuple[int, ...] | None = None
        self._read_at = 0.0

    @property
    def loaded(self) -> bool:
        """Whether a table has been read at least once (OIP server readiness)."""
        return self._loaded_at > 0

    def _load(self, started: float) -> tuple[tuple[int, ...] | None, dict[RouteKey, EndpointRoute] | None]:
        """Read the table, or only learn that nothing changed since the last read (then None)."""
        with self._factory() as session:
            # The signature first: a change committed between the two reads is in the table and shows
            # as a change next time (one spare read), never the other way round.
            signature = change_signature(session)
            if signature is not None and signature == self._signature and started - self._read_at < FULL_RELOAD_SECONDS:
                return signature, None
            return signature, load_routes(session)

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
                signature, read = await asyncio.to_thread(self._load, started)
            except Exception:
                # Endpoints keep serving from the cached table while the database is away.
                log.exception("routing table refresh failed; serving from the cached table")
                return
            self._loaded_at = started
            if read is None:
                # Nothing changed: only suspects whose time is up come back.
                if self._suspects or self._routes is not self._read:
                    self._routes = self._without_suspects(self._read)
                return
            self._read, self._signature, self._read_at = read, signature, started
            routes = self._routes = self._without_suspects(read)
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

    async def get_fresh(self, account_id: str, name: str, *, newer_than: float) -> EndpointRoute | None:
        """Return the route of an endpoint from a table loaded after ``newer_than`` (a monotonic time)."""
        await self.refresh(newer_than=newer_than)
        return self._routes.get((account_id, name))

    def cached(self, account_id: str, name: str) -> EndpointRoute | None:
        """The route this table holds now (never refreshes)."""
        return self._routes.get((account_id, name))

    def routes_named(self, name: str) -> list[EndpointRoute]:
        """Every account's cached route of an endpoint called ``name`` (never refreshes: anonymous probes use it)."""
        return [route for (_, route_name), route in self._routes.items() if route_name == name]

    def invalidate_replica(self, replica_id: int) -> None:
        """Keep a replica that failed a connection out of the table for ``SUSPECT_SECONDS``."""
        for route in self._routes.values():
            for v in route.variants:
                for r in v.replicas:
                    if r.replica_id == replica_id:
                        self._suspects[replica_id] = (r.address, time.monotonic() + SUSPECT_SECONDS)
        self._routes = self._without_suspects(self._routes)
        if self._look is not None:
            self._look.set()

    def _suspect(self, replica: ReplicaRoute, now: float) -> bool:
        entry = self._suspects.get(replica.replica_id)
        return entry is not None and entry[0] == replica.address and entry[1] > now

    def _without_suspects(self, routes: dict[RouteKey, EndpointRoute]) -> dict[RouteKey, EndpointRoute]:
        if not self._suspects:
            return routes
        now = time.monotonic()
        self._suspects = {rid: e for rid, e in self._suspects.items() if e[1] > now}
        changed: dict[RouteKey, EndpointRoute] = {}
        for key, route in routes.items():
            variants = []
            for v in route.variants:
                keep = tuple(r for r in v.replicas if not self._suspect(r, now))
                variants.append(VariantRoute(v.name, v.weight, keep or v.replicas, v.instances))
            if any(a.replicas != b.replicas for a, b in zip(variants, route.variants, strict=True)):
                changed[key] = replace(route, variants=tuple(variants))
        return {**routes, **changed} if changed else routes

    async def _loop(self) -> None:
        if self._bells is None:
            while True:
                await self.refresh()
                await asyncio.sleep(self._interval)
        bell = wakeup.Doorbell(self._bells)
        rung = self._look = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(bell.fileno(), rung.set)
        try:
            while True:
                rung.clear()
                bell.drain()
                await self.refresh()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(rung.wait(), self._idle_wait())
        finally:
            self._look = None
            loop.remove_reader(bell.fileno())
            bell.close()

    def _idle_wait(self) -> float:
        if self._idle_interval is not None:
            idle = self._idle_interval
        else:
            # A database with a change signature is PostgreSQL, the one other hosts write to.
            idle = SHARED_DB_IDLE_POLL if self._signature is not None else LOCAL_DB_ROUTES_POLL
        if self._suspects:
            # A suspect comes back when its time is up, not at the next slow poll.
            idle = min(idle, min(until for _, until in self._suspects.values()) - time.monotonic())
        # Never sooner than a table without a doorbell would look (a failing refresh keeps its suspects).
        return max(self._interval, idle)

    def start(self) -> None:
        """Start the background refresh on the running loop."""
        self._refresher.start()

    async def stop(self) -> None:
        """Stop the background refresh."""
        await self._refresher.stop()
