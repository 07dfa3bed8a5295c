"""Benchmark: the control plane at scale, without models, on PostgreSQL.

Thousands of endpoints and up to 1,000 hosts live in a database of their own (created here, dropped
afterwards). Nothing runs a model: hosts are host agents' heartbeats and passes through the real code
(``record_heartbeat``, ``HostAgent.step`` over its replicas), endpoints are created through the
services (CreateModel, CreateEndpointConfig, CreateEndpoint), and the measured parts are the real ones:
an API process's routing-table refresh (``RoutingTable``), the reconciler placing a 100-instance
endpoint and polling for it (``reconcile_endpoint``), the lost-host watch every worker runs
(``host_health.watch``). The serving fleet (two Ready instances per endpoint on the live hosts)
is written as rows, standing for what the reconciler and agents leave behind.

For each (hosts, endpoints) point it prints, per operation: SQL statements, CPU in this process (the
client: an API process, a worker or an agent) and CPU in the PostgreSQL backend serving it (read from
/proc, so this needs the server on this machine and root or the postgres user), then what each
component costs per second at the rate it runs. Also: the time to place a 100-instance endpoint and
for a routing change to reach a running API process's table.

``python -m pytest tests/benchmarks/test_bench_scale.py -m benchmark -s -p no:cacheprovider``
(``ND_SCALE_GRID=quick`` for 10/100 hosts × 100/1,000 endpoints). Figures are printed, never asserted;
docs/scaling.md keeps them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import itertools
import os
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from neurondock_platform import migrate
from neurondock_platform.config import Settings
from neurondock_platform.dataplane.routing import RoutingTable, load_routes
from neurondock_platform.db import make_engine, make_sessionmaker, session_scope, utcnow
from neurondock_platform.models import Account, Endpoint, EndpointStatus, EndpointVariant, Replica, ReplicaState
from neurondock_platform.services import deploy, endpoint_configs, endpoints, host_health
from neurondock_platform.services.reconciler import ReconcileOptions, container_hash, reconcile_endpoint
from neurondock_workers.hosting.agent import HostAgent, ReplicaProcess, _Managed
from neurondock_workers.hosting.host import record_heartbeat
from tests.support.services import fresh_postgres_database, postgres_available
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.benchmark, pytest.mark.slow, pytest.mark.postgres]

ACCOUNT = "123456789012"
REGION = "us-east-1"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"
INSTANCES = 2  # per serving endpoint
BIG = 100  # the endpoint whose placement is timed
POLLS = 5  # reconcile polls timed while the big endpoint's replicas are not Ready yet
GRID = {
    "full": ((10, 100, 1000), (100, 1000, 10000)),
    "quick": ((10, 100), (100, 1000)),
}
# How often each part runs today (the settings' defaults and the code's constants).
ROUTING_HZ = 1.0  # RoutingTable idle_interval 1 s, plus doorbell rings from its own machine
AGENT_STEP_HZ = 1.0  # Settings.agent_idle_poll_interval (0.1 s while a replica starts or stops)
HEARTBEAT_HZ = 1 / 3.75  # a quarter of the default 15 s heartbeat timeout
POLL_HZ = 20.0  # ReconcileOptions.poll_interval 0.05 s, while a reconcile waits
CLOCK = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Cost:
    """One operation's average cost."""

    queries: float
    client_ms: float
    db_ms: float
    wall_ms: float

    def per_second(self, hz: float) -> str:
        return f"{self.queries * hz:7.0f} q/s  client {self.client_ms * hz / 10:5.1f}%  db {self.db_ms * hz / 10:5.1f}%"


class Meter:
    """A one-connection engine whose statements are counted and whose server backend's CPU is read."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = make_engine(url, poolclass=StaticPool)
        self.factory: sessionmaker[Session] = make_sessionmaker(self.engine)
        self.queries = 0
        event.listen(self.engine, "before_cursor_execute", self._count)
        with self.engine.connect() as conn:
            self.backend = int(conn.execute(text("select pg_backend_pid()")).scalar_one())

    def _count(self, *args: Any) -> None:
        self.queries += 1

    def db_cpu(self) -> float:
        fields = Path(f"/proc/{self.backend}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK

    def measure(self, fn: Callable[[], object], repeat: int, at_least: float = 0.3) -> Cost:
        """Call ``fn`` ``repeat`` times and on until ``at_least`` seconds passed (the /proc clock ticks 10 ms)."""
        q, cpu, db, wall = self.queries, time.process_time(), self.db_cpu(), time.perf_counter()
        done = 0
        while done < repeat or time.perf_counter() - wall < at_least:
            fn()
            done += 1
        repeat = done
        return Cost(
            (self.queries - q) / repeat,
            1e3 * (time.process_time() - cpu) / repeat,
            1e3 * (self.db_cpu() - db) / repeat,
            1e3 * (time.perf_counter() - wall) / repeat,
        )


class _Alive(ReplicaProcess):
    """A replica process that is up: the steady state an agent's pass walks over."""

    def __init__(self) -> None:  # no process: nothing of the parent is needed
        pass

    def alive(self) -> bool:
        return True


def host_settings(base: Settings, index: int) -> Settings:
    return dataclasses.replace(base, host_id=f"sim-{index:04d}", host_address=f"10.99.{index // 250}.{index % 250}")


def heartbeat(factory: sessionmaker[Session], settings: Settings, started: dt.datetime, first: bool) -> None:
    """What HostAgent.heartbeat does: the host row, its capacity and sandbox report, its heartbeat."""
    with session_scope(factory) as session:
        record_heartbeat(session, settings, started, first=first).sandbox = "bwrap"


class World:
    """The simulated fleet in one fresh PostgreSQL database."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.base = Settings(data_dir=tmp, database_url=url, host_chips=4, s3_endpoint_url="http://unused").resolved()
        self.factory = make_sessionmaker(make_engine(url))
        self.started = utcnow()
        self.endpoints = 0
        with session_scope(self.factory) as session:
            # An admin account: CreateEndpoint skips the per-host sandbox check (a cost of its own, O(hosts)).
            session.add(Account(id=ACCOUNT, name="scale", is_admin=True))
            deploy.create_model(
                session, account_id=ACCOUNT, region=REGION, name="m", image=IMAGE, model_data_url="s3://b/m.tar.gz"
            )
            for name, count in (("c2", INSTANCES), ("c100", BIG)):
                variant = {"VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": count,
                           "InstanceType": "ml.c5.large"}  # fmt: skip
                endpoint_configs.create_endpoint_config(
                    session, account_id=ACCOUNT, region=REGION, name=name, production_variants=[variant]
                )

    def hosts(self, count: int) -> None:
        """Register ``count`` hosts, each with its agent's first heartbeat."""
        for i in range(count):
            heartbeat(self.factory, host_settings(self.base, i), self.started, first=True)

    def grow(self, total: int, hosts: int) -> None:
        """Create endpoints through CreateEndpoint until there are ``total``, each serving two instances."""
        while self.endpoints < total:
            with session_scope(self.factory) as session:
                batch = []
                for i in range(self.endpoints, min(total, self.endpoints + 50)):
                    batch.append(endpoints.create_endpoint(
                        session, account_id=ACCOUNT, region=REGION, name=f"ep-{i:05d}", config_name="c2"
                    ))  # fmt: skip
                session.flush()
                for endpoint in batch:
                    endpoint.status = EndpointStatus.IN_SERVICE
                    (variant,) = endpoint.variants
                    variant.current_instance_count = INSTANCES
                    want = container_hash(variant.container)
                    for k in range(INSTANCES):
                        rid = endpoint.id * INSTANCES + k
                        session.add(Replica(
                            endpoint_id=endpoint.id, variant_id=variant.id, host_id=f"sim-{rid % hosts:04d}",
                            ordinal=k, state=ReplicaState.READY, address=f"10.98.{rid % 250}.1:{9000 + k}",
                            channel_key=f"{rid:032x}", setup_seconds=1.0,
                            extra={"container_hash": want, "standby": False, "instance": k, "group": 0},
                        ))  # fmt: skip
                self.endpoints += len(batch)

    def spread(self, hosts: int) -> None:
        """Spread the serving replicas over the first ``hosts`` hosts (round robin), the rest go quiet."""
        with session_scope(self.factory) as session:
            session.execute(text("update replicas set host_id = 'sim-' || lpad((id % :h)::text, 4, '0')"),
                            {"h": hosts})  # fmt: skip
            # Hosts past the first ``hosts`` stop beating; the others beat (the real path is measured apart).
            session.execute(text("update hosts set last_heartbeat = case when id < :live then now() "
                                 "else now() - interval '1 hour' end"), {"live": f"sim-{hosts:04d}"})  # fmt: skip


@contextmanager
def running_table(factory: sessionmaker[Session]) -> Iterator[RoutingTable]:
    """An API process's routing table, refreshing on an event loop of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    table = RoutingTable(factory)
    loop.call_soon_threadsafe(table.start)
    try:
        yield table
    finally:
        asyncio.run_coroutine_threadsafe(table.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def has_address(table: RoutingTable, name: str, address: str) -> bool:
    """Whether the table already routes ``name`` to a replica at ``address``."""
    route = table.cached(ACCOUNT, name)
    return route is not None and any(r.address == address for v in route.variants for r in v.replicas)


def propagation(world: World, table: RoutingTable, samples: int = 5) -> list[float]:
    """Seconds from a committed address change (a replica restarted elsewhere) to the API's table."""
    out = []
    for n in range(samples):
        name = f"ep-{(n * 37) % world.endpoints:05d}"
        address = f"10.97.{n}.{int(time.time()) % 250}:{7000 + n}"
        with session_scope(world.factory) as session:
            rid = session.scalar(select(Replica.id).join(Endpoint).where(Endpoint.name == name).limit(1))
            session.execute(update(Replica).where(Replica.id == rid).values(address=address))
        # Land the change at a random point of the refresh cycle, as a real one would.
        time.sleep(random.uniform(0, 0.3))
        committed = time.perf_counter()
        wait_for(
            functools.partial(has_address, table, name, address),
            60,
            interval=0.002,
            what=f"the routing change to {name}",
        )
        out.append(time.perf_counter() - committed)
    return out


def place_big(world: World, meter: Meter, name: str) -> dict[str, float]:
    """CreateEndpoint with 100 instances, then the reconciler: time to place, and its poll's cost."""
    with session_scope(world.factory) as session:
        endpoint_id = endpoints.create_endpoint(
            session, account_id=ACCOUNT, region=REGION, name=name, config_name="c100"
        ).id
    snaps: list[tuple[float, float, float, float]] = []
    started = time.perf_counter()

    def sleep(seconds: float) -> None:
        # The reconciler's waits: the first one ends placement; the next ones time its polls for Ready.
        snaps.append((meter.queries, time.process_time(), meter.db_cpu(), time.perf_counter()))
        if len(snaps) == POLLS + 1:
            # The agents report the replicas Ready (what HostAgent._update writes for each).
            with session_scope(world.factory) as session:
                session.execute(update(Replica).where(Replica.endpoint_id == endpoint_id).values(
                    state=ReplicaState.READY, address="10.96.0.1:9000", channel_key="k" * 32))  # fmt: skip

    outcome = reconcile_endpoint(meter.factory, endpoint_id, ReconcileOptions(heartbeat_timeout=30), sleep=sleep)
    assert outcome == "InService", outcome
    diffs = [[b - a for a, b in zip(x, y, strict=True)] for x, y in itertools.pairwise(snaps[: POLLS + 1])]
    with session_scope(world.factory) as session:
        placed = session.scalar(select(EndpointVariant.current_instance_count).where(
            EndpointVariant.endpoint_id == endpoint_id))  # fmt: skip
        assert placed == BIG
        endpoints.delete_endpoint(session, account_id=ACCOUNT, region=REGION, name=name)
    reconcile_endpoint(world.factory, endpoint_id, ReconcileOptions(heartbeat_timeout=30), sleep=lambda s: None)
    return {
        "placed_s": snaps[0][3] - started,
        "poll_queries": statistics.mean(d[0] for d in diffs),
        "poll_client_ms": 1e3 * statistics.mean(d[1] for d in diffs),
        "poll_db_ms": 1e3 * statistics.mean(d[2] for d in diffs),
    }


def agent_step(world: World, meter: Meter, hosts: int) -> Cost:
    """A steady-state pass of the real agent of host 0 over the replicas it runs."""
    settings = host_settings(world.base, 0)
    agent = HostAgent(settings, meter.factory, cast(Any, lambda owner: None))
    agent.heartbeat()
    agent._recovered = True
    with session_scope(world.factory) as session:
        mine = session.scalars(select(Replica.id).where(Replica.host_id == settings.host_id)).all()
    for rid in mine:
        agent._managed[rid] = _Managed(rid, phase="ready", proc=_Alive(), busy=False, checked_at=time.monotonic() + 1e9)
    agent.heartbeat_interval = 1e9  # the heartbeat is measured on its own
    return meter.measure(agent.step, 10)


def read_routes(meter: Meter) -> None:
    """A full read of the routing table: what every refresh cost before the change check."""
    with meter.factory() as session:
        load_routes(session)


def scan_tick(meter: Meter) -> None:
    """What every worker did each second before the watch lease: look for lost hosts itself."""
    with session_scope(meter.factory) as session:
        host_health.endpoints_on_lost_hosts(session, 30.0)


def watch_tick(meter: Meter, holder: str) -> None:
    """One worker's second of the lost-host watch, as tasks.watch_hosts runs it on every worker."""
    with session_scope(meter.factory) as session:
        host_health.watch(session, 30.0, holder)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with fresh_postgres_database() as url:
        migrate.upgrade(Settings(database_url=url, data_dir=tmp_path_factory.mktemp("scale")).resolved())
        yield World(url, tmp_path_factory.mktemp("scale-data"))


@pytest.mark.timeout(1200)
def test_control_plane_at_scale(world):
    hosts_grid, endpoints_grid = GRID[os.environ.get("ND_SCALE_GRID", "full")]
    world.hosts(max(hosts_grid))
    meter = Meter(world.url)
    rows = []
    for n_endpoints in endpoints_grid:
        grown = time.perf_counter()
        world.grow(n_endpoints, max(hosts_grid))
        print(f"\n{n_endpoints} endpoints created in {time.perf_counter() - grown:.1f} s")
        for n_hosts in hosts_grid:
            point = time.perf_counter()
            world.spread(n_hosts)
            table = RoutingTable(meter.factory)
            full = meter.measure(lambda: read_routes(meter), 3)
            asyncio.run(table.refresh())
            refresh = meter.measure(lambda: asyncio.run(table.refresh()), 5)  # noqa: B023
            beat = itertools.cycle([host_settings(world.base, i) for i in range(n_hosts)])
            hb = meter.measure(lambda: heartbeat(meter.factory, next(beat), world.started, False), 20)  # noqa: B023
            step = agent_step(world, meter, n_hosts)
            scan = meter.measure(lambda: scan_tick(meter), 5)
            watch = meter.measure(lambda: watch_tick(meter, "worker-0"), 5)
            others = meter.measure(lambda: watch_tick(meter, "worker-1"), 5)
            # The database's share: every worker's client CPU is its own host's.
            watch_fleet = (watch.db_ms + others.db_ms * (n_hosts - 1)) / 10
            watch_q = watch.queries + others.queries * (n_hosts - 1)
            big = place_big(world, meter, f"big-{n_endpoints}-{n_hosts}")
            with running_table(make_sessionmaker(make_engine(world.url))) as live:
                wait_for(lambda: live.loaded, 120, what="the API's first routing table")
                reach = propagation(world, live)
            scan_fleet = scan.db_ms * n_hosts / 10
            rows.append((n_hosts, n_endpoints, full, refresh, hb, step, scan_fleet, watch_fleet, big, reach))
            print(
                f"  {n_hosts:>5} hosts × {n_endpoints:>6} endpoints ({time.perf_counter() - point:.1f} s):\n"
                f"    API routing, full read: {full.queries:.0f} q, client {full.client_ms:.1f} ms, "
                f"db {full.db_ms:.1f} ms, wall {full.wall_ms:.1f} ms → every refresh before: "
                f"{full.per_second(ROUTING_HZ)}\n"
                f"    API routing, tick with no change: {refresh.queries:.0f} q, client {refresh.client_ms:.1f} ms, "
                f"db {refresh.db_ms:.1f} ms, wall {refresh.wall_ms:.1f} ms → {refresh.per_second(ROUTING_HZ)}\n"
                f"    routing change → API table: median {statistics.median(reach) * 1e3:.0f} ms, "
                f"max {max(reach) * 1e3:.0f} ms\n"
                f"    agent heartbeat: {hb.queries:.0f} q, client {hb.client_ms:.2f} ms, db {hb.db_ms:.2f} ms; "
                f"agent pass ({2 * n_endpoints // n_hosts} replicas): {step.queries:.0f} q, "
                f"client {step.client_ms:.2f} ms, db {step.db_ms:.2f} ms → all hosts: "
                f"{(hb.queries * HEARTBEAT_HZ + step.queries * AGENT_STEP_HZ) * n_hosts:.0f} q/s, "
                f"db {(hb.db_ms * HEARTBEAT_HZ + step.db_ms * AGENT_STEP_HZ) * n_hosts / 10:.0f}% of a core\n"
                f"    worker: lost-host scan (every worker, before) {scan.queries:.0f} q, "
                f"client {scan.client_ms:.1f} ms, "
                f"db {scan.db_ms:.1f} ms → db {scan_fleet:.0f}% of a core\n"
                f"    worker: lost-host watch {watch.queries:.0f} q, client {watch.client_ms:.1f} ms, "
                f"db {watch.db_ms:.1f} ms; "
                f"on the others {others.queries:.0f} q, {others.client_ms + others.db_ms:.1f} ms → one worker per "
                f"host, 1/s: {watch_q:.0f} q/s, db {watch_fleet:.0f}% of a core;\n"
                f"    place {BIG} instances: {big['placed_s']:.2f} s; reconcile poll: "
                f"{big['poll_queries']:.0f} q, client {big['poll_client_ms']:.1f} ms, db {big['poll_db_ms']:.1f} ms"
                f" (20/s while waiting)"
            )
    print(
        "\nhosts endpoints | API process CPU% at 1/s: full reads  checks | change→API ms | all agents q/s  db CPU%"
        " | watch db CPU%: scans  lease | place 100 s | reconcile poll q  ms"
    )
    for h, e, full, refresh, hb, step, scan_fleet, watch_fleet, big, reach in rows:
        agents_q = (hb.queries * HEARTBEAT_HZ + step.queries * AGENT_STEP_HZ) * h
        agents_db = (hb.db_ms * HEARTBEAT_HZ + step.db_ms * AGENT_STEP_HZ) * h / 10
        full_cpu = (full.client_ms + full.db_ms) * ROUTING_HZ / 10
        check_cpu = (refresh.client_ms + refresh.db_ms) * ROUTING_HZ / 10
        reach_ms = statistics.median(reach) * 1e3
        print(
            f"{h:>5} {e:>9} | {full_cpu:>34.1f} {check_cpu:>7.1f} | {reach_ms:>13.0f} | "
            f"{agents_q:>14.0f} {agents_db:>7.0f} | {scan_fleet:>20.0f} {watch_fleet:>6.0f} | "
            f"{big['placed_s']:>11.2f} | "
            f"{big['poll_queries']:>16.0f} {big['poll_client_ms'] + big['poll_db_ms']:>4.1f}"
        )
    print(f"load average: {os.getloadavg()}")
