"""What must hold on a real multi-host deployment: two API processes, three worker hosts, PostgreSQL,
Redis and an S3 store, each in a network namespace of its own (tests/multihost/fleet.py).

Behind the ``multihost`` and ``slow`` markers: ``python -m pytest -m multihost tests/multihost``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

from tests.multihost.deploy import Load, create_endpoint, invoke, upload_model
from tests.multihost.fleet import Fleet
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_url(fleet, tmp_path_factory):
    return upload_model(fleet, tmp_path_factory.mktemp("models"))


def _runtime_clients(fleet: Fleet) -> list:
    # No client-side retries: every failure the fleet lets through is counted.
    return [fleet.client("sagemaker-runtime", api=i, retries={"max_attempts": 1}) for i in (1, 2)]


def _settled(fleet: Fleet, name: str, hosts: set[str], count: int) -> bool:
    running = [r for r in fleet.replicas(name) if r["desired_state"] == "running"]
    status = fleet.sql("select status from endpoints where name = :n", n=name)[0][0]
    return (
        status == "InService"
        and len(running) == count
        and all(r["state"] == "Ready" and r["host_id"] in hosts for r in running)
    )


def test_an_endpoint_on_different_hosts_serves_from_both_apis(fleet, model_url):
    name = create_endpoint(fleet.client("sagemaker", api=1), model_url, count=3)
    placed = fleet.replicas(name)
    assert sorted(r["host_id"] for r in placed) == ["host-h1", "host-h2", "host-h3"], placed
    answers = {api: [invoke(fleet.client("sagemaker-runtime", api=api), name) for _ in range(6)] for api in (1, 2)}
    assert answers[1] == answers[2] and len({json.dumps(a) for a in answers[1]}) == 1
    # The other API created nothing but serves it all the same (its routing table is read from the database).
    assert fleet.client("sagemaker", api=2).describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    fleet.client("sagemaker", api=2).delete_endpoint(EndpointName=name)
    wait_for(
        lambda: not fleet.replicas(name) and not fleet.sql("select 1 from endpoints where name = :n", n=name),
        60,
        what="the endpoint to go",
    )


@pytest.mark.parametrize("how", ["link", "sigkill"])
def test_a_lost_host_has_its_instances_replaced_without_failed_invocations(fleet, model_url, how):
    sm = fleet.client("sagemaker", api=1)
    pair = create_endpoint(sm, model_url, count=2)
    single = create_endpoint(sm, model_url, count=1)
    pair_hosts = {r["host_id"] for r in fleet.replicas(pair)}
    assert len(pair_hosts) == 2
    victim = sorted(pair_hosts)[0].removeprefix("host-")
    survivors = {f"host-{h}" for h in fleet.host_names if h != victim}
    rts = _runtime_clients(fleet)

    lost_at = time.monotonic()
    with Load(rts, pair) as load, Load(rts, single) as single_load:
        wait_for(lambda: min(load.ok) > 5, 60, what="some load")
        if how == "link":
            fleet.net.cut(victim)  # its packets vanish: no RST, no FIN, nothing
        else:
            fleet.net.kill_all(victim)  # agent, worker, supervisor and replicas at once
        wait_for(
            lambda: _settled(fleet, pair, survivors, 2) and _settled(fleet, single, survivors, 1),
            120,
            what="the instances to be re-placed",
            state=lambda: (fleet.replicas(pair), fleet.replicas(single), fleet.logs()),
        )
        replaced_after = time.monotonic() - lost_at
        # Keep the load on a little past the move: the new replicas must serve through both APIs.
        before = list(load.ok)
        wait_for(
            lambda: all(a > b + 5 for a, b in zip(load.ok, before, strict=True)),
            60,
            what="traffic on the new placement",
        )
    print(
        f"\nhost lost by {how}: re-placed in {replaced_after:.1f} s; 2-instance endpoint: {sum(load.ok)} ok, "
        f"{len(load.errors)} failed; 1-instance endpoint: {sum(single_load.ok)} ok, {len(single_load.errors)} failed"
    )
    assert load.errors == [], load.errors[:5]
    assert all(n > 0 for n in load.ok)

    # The host comes back: its agent finds its instances moved and stops what it still ran of them.
    if how == "link":
        fleet.net.restore(victim)
    else:
        fleet.start_host(victim)
    fleet.wait_hosts([victim])
    wait_for(
        lambda: not [p for p in fleet.net.pids(victim) if "hosting.replica" in _cmdline(p)],
        60,
        what="the returning host to stop its moved replicas",
    )
    for name in (pair, single):
        sm.delete_endpoint(EndpointName=name)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_an_api_killed_under_load_leaves_the_other_serving_and_nothing_half_written(fleet, model_url):
    name = create_endpoint(fleet.client("sagemaker", api=2), model_url, count=2)
    rt1, rt2 = _runtime_clients(fleet)
    writer_errors: list[str] = []
    created: list[str] = []

    def write_until_killed() -> None:
        # Control-plane writes through api1 until it dies: each CreateEndpoint spans several tables.
        sm = fleet.client("sagemaker", api=1, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
        for i in range(1000):
            try:
                created.append(create_endpoint(sm, model_url, count=1, name=f"w{i}-{name}", wait=False))
            except Exception as exc:
                writer_errors.append(repr(exc))
                return

    import threading

    with Load([rt2], name) as survivor, Load([rt1], name) as doomed:
        writer = threading.Thread(target=write_until_killed, daemon=True)
        writer.start()
        wait_for(lambda: len(created) >= 2 and survivor.ok[0] > 5 and doomed.ok[0] > 5, 60, what="writes and load")
        fleet.net.kill_all("api1")
        killed_at = time.monotonic() - survivor.started
        writer.join(30)
        ok_at_kill = survivor.ok[0]
        wait_for(lambda: survivor.ok[0] > ok_at_kill + 20, 60, what="api2 to keep serving")
    assert survivor.errors == [], survivor.errors[:5]
    assert doomed.errors and all(t >= killed_at - 0.5 for _, t, _ in doomed.errors)
    assert writer_errors, "the writer should have seen api1 die"

    # Nothing half-written: every endpoint, config and model the API committed is whole, and each
    # endpoint the writer created goes on to InService through the workers with api1 still down.
    broken = fleet.sql(
        "select e.name from endpoints e left join endpoint_variants v on v.endpoint_id = e.id "
        "group by e.name having count(v.id) = 0 "
        "union select c.name from endpoint_configs c where json_array_length(c.production_variants::json) = 0 "
        "union select m.name from models m "
        "where m.primary_container is null and json_array_length(m.containers::json) = 0"
    )
    assert broken == []
    names = [r[0] for r in fleet.sql("select name from endpoints where name like :p", p=f"w%-{name}")]
    assert set(created) <= set(names) and len(names) <= len(created) + 1
    sm2 = fleet.client("sagemaker", api=2)
    for ep in names:
        sm2.get_waiter("endpoint_in_service").wait(EndpointName=ep, WaiterConfig={"Delay": 0.5, "MaxAttempts": 240})
    fleet.start_api(1)
    assert invoke(fleet.client("sagemaker-runtime", api=1), name)
    for ep in [*names, name]:
        sm2.delete_endpoint(EndpointName=ep)


@pytest.mark.parametrize("server", ["redis", "postgres"])
def test_a_deploy_completes_exactly_once_across_a_restart(fleet, model_url, server):
    sm = fleet.client("sagemaker", api=1)
    name = create_endpoint(sm, model_url, count=3, wait=False)
    status = fleet.sql("select status from endpoints where name = :n", n=name)[0][0]
    assert status == "Creating"
    if server == "redis":
        fleet.stop_redis()
        fleet.start_redis()
    else:
        fleet.stop_postgres()
        fleet.start_postgres()
    sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 0.5, "MaxAttempts": 360})
    running = [r for r in fleet.replicas(name) if r["desired_state"] == "running"]
    assert len(running) == 3 and all(r["state"] == "Ready" for r in running), running
    # Exactly once: one InService transition, and three instances, not a second set beside the first.
    events = fleet.sql("select status from endpoint_events where endpoint_name = :n order by id", n=name)
    assert Counter(r[0] for r in events)["InService"] == 1, events
    assert invoke(fleet.client("sagemaker-runtime", api=2), name)
    sm.delete_endpoint(EndpointName=name)


OUTSIDER = textwrap.dedent(
    """
    import json, socket, sys
    from neurondock_platform.dataplane import protocol
    address, key = sys.argv[1], sys.argv[2]
    out = {}
    host, _, port = address.rpartition(":")
    # 1. No handshake: straight to an invocation frame; record every frame until the replica hangs up.
    frames = []
    try:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            protocol.send_frame(sock, {"op": "invoke", "content_type": "application/json"}, b"[[0.5]]")
            while len(frames) < 5:
                meta, body = protocol.recv_frame(sock)
                frames.append({"meta": meta, "body": body.decode(errors="replace")[:200]})
    except Exception as exc:
        frames.append(type(exc).__name__)
    out["no_handshake"] = frames
    # 2. A handshake with the wrong key, then 3. with the right one (the control: the test can fail).
    for label, k in (("wrong_key", "0" * len(key)), ("right_key", key)):
        try:
            out[label] = protocol.ping(address, k, timeout=5)
        except Exception as exc:
            out[label] = type(exc).__name__
    print(json.dumps(out))
    """
)


def test_a_replica_channel_refuses_an_address_outside_the_fleet(fleet, model_url):
    name = create_endpoint(fleet.client("sagemaker", api=1), model_url, count=1)
    (replica,) = fleet.replicas(name)
    key = fleet.sql("select channel_key from replicas where id = :i", i=replica["id"])[0][0]
    if "out" not in fleet.net.nodes:
        fleet.net.add("out", 200)  # on the bridge, but no part of the fleet: no key

    def probe(node: str, k: str) -> dict:
        proc = fleet.net.popen(node, [sys.executable, "-c", OUTSIDER, replica["address"], k],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        return json.loads(out)

    outsider = probe("out", secrets.token_hex(len(key) // 2))  # a guess of its own
    print("\noutside the fleet:", outsider)
    # Without the key nothing gets through: no frame with a 200, no model output.
    answered = [f for f in outsider["no_handshake"] if isinstance(f, dict) and f["meta"].get("status") == 200]
    assert answered == [], outsider
    assert outsider["wrong_key"] == "ChannelAuthError" and outsider["right_key"] == "ChannelAuthError", outsider
    # The same probe with the replica's key (what an API process holds) gets through: the refusal is the key's.
    insider = probe("api2", key)
    assert insider["right_key"].get("status") == 200, insider
    assert insider["wrong_key"] != insider["right_key"]
    fleet.client("sagemaker", api=1).delete_endpoint(EndpointName=name)
