"""A replica that outgrows its memory limit is replaced by a fresh process without failing a request."""

from __future__ import annotations

import asyncio
import re
import threading
import time

from sqlalchemy import update
from tests.support.processes import pid_gone
from tests.support.waiting import wait_for

import neurondock_platform.models as m
from neurondock_platform.dataplane.client import ReplicaClient
from neurondock_platform.dataplane.protocol import OP_INVOKE
from neurondock_platform.dataplane.router import Router
from neurondock_platform.dataplane.routing import RoutingTable
from neurondock_platform.db import session_scope
from neurondock_platform.models import EndpointStatus, ReplicaState
from neurondock_workers.hosting.agent import replica_dir

ACCOUNT_ID = "123456789012"  # the hosting conftest's account
LIMIT_MB = 16
# Each call keeps 128 KiB: the limit trips after ~130 calls, and a slow replacement start stays cheap.
LEAKY = """
import json

_kept = []

def model_fn(model_dir):
    return None

def transform_fn(model, data, content_type, accept):
    _kept.append(bytearray(b"x" * (128 * 1024)))
    return json.dumps({"kept": len(_kept)}), "application/json"
"""


async def _hammer(sessions, endpoint: str, done: threading.Event) -> list[object]:
    """Invoke through the real router from three clients until ``done``; return every outcome."""
    # The runtime's own table refresh interval: the agent's switch has to work with it.
    table = RoutingTable(sessions, refresh_interval=0.25)
    router = Router(table, ReplicaClient())
    outcomes: list[object] = []
    meta = {"op": OP_INVOKE, "content_type": "application/json", "accept": "application/json"}

    async def client() -> None:
        while not done.is_set():
            route = await table.get(ACCOUNT_ID, endpoint)
            try:
                assert route is not None
                answer = await router.invoke(route, None, dict(meta), b"{}", 30.0)
                outcomes.append(answer.meta.get("status"))
            except Exception as exc:  # every failure counts, whatever its type
                outcomes.append(exc)
            await asyncio.sleep(0.003)

    table.start()
    try:
        await asyncio.gather(*(client() for _ in range(3)))
    finally:
        await table.stop()
        await router.caller.close()
    return outcomes


def test_a_leaking_replica_is_recycled_with_no_failed_invocation(
    make_agent, upload, add_replica, load_replica, sessions, settings, code
):
    agent = make_agent()
    replica_id = add_replica(
        upload({"code/inference.py": code(LEAKY)}), environment={"NEURONDOCK_MAX_MEMORY_GROWTH_MB": str(LIMIT_MB)}
    )
    with session_scope(sessions) as session:
        session.execute(update(m.Endpoint).values(status=EndpointStatus.IN_SERVICE))
        endpoint = session.get(m.Replica, replica_id).endpoint_id
        endpoint_name = session.get(m.Endpoint, endpoint).name

    stop_agent = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop_agent,), daemon=True)
    runner.start()
    done = threading.Event()
    outcomes: list[object] = []
    replaced_by: list[int] = []
    try:
        first = wait_for(
            lambda: (row := load_replica(replica_id)).state == ReplicaState.READY and row,
            60,
            what="the replica to be Ready",
            state=lambda: (load_replica(replica_id).state, load_replica(replica_id).failure_reason),
        )

        def watch() -> None:
            # Keep hammering until the old process is gone and the replacement has served a while.
            end = time.monotonic() + 90
            while time.monotonic() < end:
                row = load_replica(replica_id)
                if row.pid not in (None, first.pid) and pid_gone(first.pid):
                    replaced_by.append(row.pid)
                    time.sleep(1.0)
                    break
                time.sleep(0.05)
            done.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        outcomes = asyncio.run(_hammer(sessions, endpoint_name, done))
        watcher.join(5)
    finally:
        done.set()
        stop_agent.set()
        agent.wake()
        runner.join(30)

    failures = [o for o in outcomes if o != 200]
    assert replaced_by, "the replica was not replaced within 90 s"
    assert len(outcomes) > 200, f"only {len(outcomes)} invocations were made"
    assert not failures, f"{len(failures)} of {len(outcomes)} invocations failed: {failures[:5]}"
    after = load_replica(replica_id)
    assert after.extra.get("recycles", 0) >= 1
    assert after.restarts == 0, "a recycle is not a crash"
    log = (replica_dir(settings, replica_id) / "replica.log").read_text()
    assert re.search(rf"recycled: RSS grew by \d+ MiB past the limit {LIMIT_MB} MiB", log), log[-2000:]
    print(f"{len(outcomes)} invocations, all 200; {after.extra['recycles']} recycle(s); {first.pid} → {replaced_by}")
