"""The routing table reads the database in full only when a row it is built from changed (PostgreSQL),
and every committed change reaches it, whatever order the writers commit in."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from sqlalchemy import delete, update
from tests.support.waiting import wait_for

from neurondock_platform.dataplane import routing
from neurondock_platform.dataplane.routing import RoutingTable
from neurondock_platform.db import session_scope
from neurondock_platform.models import Account, Endpoint, EndpointStatus, EndpointVariant, Host, Replica, ReplicaState


def _endpoint(factory, name: str) -> tuple[int, int]:
    """An InService endpoint with one Ready replica; returns (endpoint id, replica id)."""
    with session_scope(factory) as session:
        if session.get(Host, "h1") is None:
            session.add(Host(id="h1", address="10.0.0.1"))
        account = session.query(Account.id).limit(1).scalar()
        endpoint = Endpoint(account_id=account, name=name, arn=f"arn:{name}", endpoint_config_name=name,
                            status=EndpointStatus.IN_SERVICE)  # fmt: skip
        session.add(endpoint)
        session.flush()
        variant = EndpointVariant(endpoint_id=endpoint.id, name="AllTraffic", model_name="m", container={},
                                  instance_type="ml.c5.large")  # fmt: skip
        session.add(variant)
        session.flush()
        replica = Replica(endpoint_id=endpoint.id, variant_id=variant.id, host_id="h1", state=ReplicaState.READY,
                          address=f"10.0.0.1:{9000 + endpoint.id}", channel_key="k" * 32)  # fmt: skip
        session.add(replica)
        session.flush()
        return endpoint.id, replica.id


def _address(table: RoutingTable, name: str) -> str | None:
    (route,) = table.routes_named(name) or [None]
    if route is None or not route.variants or not route.variants[0].replicas:
        return None
    return route.variants[0].replicas[0].address


@pytest.fixture
def reads(monkeypatch):
    """Count the table's full reads."""
    count = [0]
    real = routing.load_routes

    def counting(session):
        count[0] += 1
        return real(session)

    monkeypatch.setattr(routing, "load_routes", counting)
    return count


def test_an_unchanged_database_is_not_read_again_and_every_change_arrives(session_factory, engine, reads):
    postgres = engine.dialect.name == "postgresql"
    table = RoutingTable(session_factory)
    _, first = _endpoint(session_factory, "a")
    _endpoint(session_factory, "b")
    asyncio.run(table.refresh())
    asyncio.run(table.refresh())
    asyncio.run(table.refresh())
    # PostgreSQL: one full read, then cheap checks; SQLite offers no signature and reads every time.
    assert reads[0] == (1 if postgres else 3)

    with session_scope(session_factory) as session:
        session.execute(update(Replica).where(Replica.id == first).values(address="10.0.0.9:1"))
    asyncio.run(table.refresh())
    assert _address(table, "a") == "10.0.0.9:1"

    # Two writers: the one that began first commits last. A max(updated_at) check would miss it.
    late, early = session_factory(), session_factory()
    try:
        late.execute(update(Replica).where(Replica.id == first).values(address="10.0.0.9:2"))
        if not postgres:
            late.commit()  # SQLite has one writer at a time: nothing to interleave
        early.execute(update(Endpoint).where(Endpoint.name == "b").values(status=EndpointStatus.UPDATING))
        early.commit()
        asyncio.run(table.refresh())
        assert table.routes_named("b")[0].status == EndpointStatus.UPDATING
        late.commit()
    finally:
        late.close()
        early.close()
    asyncio.run(table.refresh())
    assert _address(table, "a") == "10.0.0.9:2"

    with session_scope(session_factory) as session:
        session.execute(delete(Replica).where(Replica.endpoint_id.in_(select_ids(session))))
        session.execute(delete(Endpoint).where(Endpoint.name == "b"))
    asyncio.run(table.refresh())
    assert table.routes_named("b") == []
    settled = reads[0]
    asyncio.run(table.refresh())
    assert reads[0] == settled + (0 if postgres else 1)


def select_ids(session) -> list[int]:
    return [e.id for e in session.query(Endpoint).filter(Endpoint.name == "b")]


def test_a_suspect_comes_back_when_its_time_is_up_without_a_database_change(session_factory, monkeypatch):
    table = RoutingTable(session_factory)
    _, rid = _endpoint(session_factory, "s")
    _endpoint_second_replica(session_factory, "s")
    asyncio.run(table.refresh())
    # The routing table's clock, and only its clock, jumps over the suspect time instead of waiting it out.
    skipped = [0.0]
    monkeypatch.setattr(routing, "time", SimpleNamespace(monotonic=lambda: time.monotonic() + skipped[0]))
    table.invalidate_replica(rid)
    assert rid not in _ids(table, "s")
    asyncio.run(table.refresh())
    assert rid not in _ids(table, "s"), "still suspect: the refresh keeps it out"
    skipped[0] = routing.SUSPECT_SECONDS - 0.5
    asyncio.run(table.refresh())
    assert rid not in _ids(table, "s"), "still suspect half a second before its time is up"
    skipped[0] = routing.SUSPECT_SECONDS

    def back() -> bool:
        asyncio.run(table.refresh())
        return rid in _ids(table, "s")

    wait_for(back, 30, what="the suspect's return", interval=0.05)


def _endpoint_second_replica(factory, name: str) -> None:
    with session_scope(factory) as session:
        variant = session.query(EndpointVariant).join(Endpoint).filter(Endpoint.name == name).one()
        session.add(Replica(endpoint_id=variant.endpoint_id, variant_id=variant.id, host_id="h1", ordinal=1,
                            state=ReplicaState.READY, address="10.0.0.1:8999", channel_key="j" * 32))  # fmt: skip


def _ids(table: RoutingTable, name: str) -> set[int]:
    return {r.replica_id for route in table.routes_named(name) for v in route.variants for r in v.replicas}


def test_with_a_doorbell_endpoint_and_variant_changes_arrive_at_once_and_a_suspect_on_time(
    session_factory, settings, monkeypatch
):
    from neurondock_platform import wakeup

    # Every writer of this database rings (as the API's, worker's and agent's factories do); the poll is never due.
    wakeup.install(session_factory, settings.data_dir)
    bells = wakeup.bells_dir(settings.data_dir, wakeup.ROUTES)
    table = RoutingTable(session_factory, bells=bells, idle_interval=600.0)
    _, rid = _endpoint(session_factory, "w")
    _endpoint_second_replica(session_factory, "w")

    def route() -> routing.EndpointRoute:
        (found,) = table.routes_named("w")
        return found

    def variant(session) -> EndpointVariant:
        return session.query(EndpointVariant).join(Endpoint).filter(Endpoint.name == "w").one()

    async def scenario() -> None:
        table.start()
        try:
            await asyncio.to_thread(wait_for, lambda: len(_ids(table, "w")) == 2, 10, what="the first read")
            with session_scope(session_factory) as session:
                variant(session).desired_weight = 3.0
            await asyncio.to_thread(wait_for, lambda: route().variants[0].weight == 3.0, 10, what="the new weight")
            with session_scope(session_factory) as session:
                variant(session).endpoint.status = EndpointStatus.OUT_OF_SERVICE
            await asyncio.to_thread(wait_for, lambda: not route().servable, 10, what="the new status")
            monkeypatch.setattr(routing, "SUSPECT_SECONDS", 1.0)
            table.invalidate_replica(rid)
            assert rid not in _ids(table, "w")
            await asyncio.to_thread(wait_for, lambda: rid in _ids(table, "w"), 10, what="the suspect's return")
        finally:
            await table.stop()

    asyncio.run(scenario())


def test_an_idle_table_on_sqlite_with_a_doorbell_looks_unrung_once_a_minute(session_factory, engine, settings):
    from neurondock_platform import wakeup

    if engine.dialect.name != "sqlite":
        pytest.skip("on PostgreSQL other hosts' writes ring nobody here: the table looks every second")
    table = RoutingTable(session_factory, bells=wakeup.bells_dir(settings.data_dir, wakeup.ROUTES))
    _endpoint(session_factory, "idle")
    asyncio.run(table.refresh())
    assert _ids(table, "idle")
    # The wait before its next unrung look: every writer of this database rings, a miss refreshes at once.
    assert table._idle_wait() >= 60.0
