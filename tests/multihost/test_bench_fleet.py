"""Benchmark on the namespaced fleet (two APIs, three hosts, tests/multihost/fleet.py): invocations/s
through one API process against two, CreateEndpoint → InService, and re-placement after a host loss.

``python -m pytest tests/multihost/test_bench_fleet.py -m benchmark -s -p no:cacheprovider`` (root,
ip netns). Load comes from two generator processes (tests/multihost/loadgen.py), each holding keep-alive
connections; the 1-API and 2-API runs alternate so that other work on the machine falls on both. CPU is
read from /proc for every process of each namespace, so the cost per request is split by role. Figures
are printed beside the machine's load average, never asserted; they go into docs/scaling.md.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.multihost.deploy import create_endpoint, upload_model
from tests.multihost.fleet import Fleet
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.benchmark]

ROOT = Path(__file__).resolve().parents[2]
CONNECTIONS = 4  # per generator process
WINDOW = 10.0
ROUNDS = 2
CLOCK = os.sysconf("SC_CLK_TCK")


def _cpu(fleet: Fleet, nodes: list[str]) -> float:
    """CPU seconds (user + system) used so far by every live process in these namespaces."""
    total = 0
    for node in nodes:
        for pid in fleet.net.pids(node):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (children are separate pids here)
    return total / CLOCK


def _drive(fleet: Fleet, name: str, apis: list[int]) -> dict[str, float]:
    """Two generator processes, aimed at ``apis`` (one each, or both at the same one); answers/s and CPU/answer."""
    roles = {"api": fleet.api_names, "hosts": fleet.host_names, "db": ["db"]}
    argv = [sys.executable, "-m", "tests.multihost.loadgen"]
    procs = [
        subprocess.Popen(
            [*argv, fleet.api_url(api), name, str(CONNECTIONS), str(WINDOW), "2"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for api in apis
    ]
    for p in procs:
        assert p.stdout is not None and "warm" in p.stdout.readline()  # their window starts now
    before = {role: _cpu(fleet, nodes) for role, nodes in roles.items()}
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    after = {role: _cpu(fleet, nodes) for role, nodes in roles.items()}
    ok = sum(r["counts"].get("ok", 0) for r in results)
    failed = sum(v for r in results for k, v in r["counts"].items() if k != "ok")
    window = max(r["window"] for r in results)
    out = {"rate": ok / window, "failed": float(failed)}
    out.update({f"cpu_ms_{role}": 1e3 * (after[role] - before[role]) / max(ok, 1) for role in roles})
    return out


def _in_service(fleet: Fleet, name: str) -> bool:
    rows = fleet.sql("select status from endpoints where name = :n", n=name)
    return bool(rows) and rows[0][0] == "InService"


def test_fleet_throughput_deploy_and_replacement(fleet, tmp_path):
    sm = fleet.client("sagemaker", api=1)
    model_url = upload_model(fleet, tmp_path)
    print(f"\nload average at start: {os.getloadavg()}")

    # CreateEndpoint → InService, three instances over three hosts (polled every 50 ms from the database).
    deploys = []
    for _ in range(3):
        started = time.monotonic()
        name = create_endpoint(sm, model_url, count=3, wait=False)
        wait_for(lambda: _in_service(fleet, name), 180, interval=0.05, what="InService", state=fleet.logs)  # noqa: B023
        deploys.append(time.monotonic() - started)
        assert len({r["host_id"] for r in fleet.replicas(name)}) == 3
    print(f"CreateEndpoint → InService (3 instances, 3 hosts): {', '.join(f'{d:.2f}' for d in deploys)} s")

    # Throughput through one API process against two, alternating.
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    for _ in range(ROUNDS):
        runs[1].append(_drive(fleet, name, [1, 1]))
        runs[2].append(_drive(fleet, name, [1, 2]))
    for apis, rs in runs.items():
        cpu = {k: statistics.median(r[k] for r in rs) for k in rs[0] if k.startswith("cpu_ms_")}
        print(
            f"{apis} API process(es), {2 * CONNECTIONS} connections: "
            f"{', '.join(format(r['rate'], '.0f') for r in rs)} invocations/s, "
            f"{sum(r['failed'] for r in rs):.0f} failed; CPU ms per invocation: "
            + ", ".join(f"{k.removeprefix('cpu_ms_')} {v:.2f}" for k, v in cpu.items())
        )
    ratio = statistics.median(r["rate"] for r in runs[2]) / statistics.median(r["rate"] for r in runs[1])
    print(f"2 APIs / 1 API: {ratio:.2f}×   load average now: {os.getloadavg()}")
    assert all(r["failed"] == 0 for rs in runs.values() for r in rs)

    # Re-placement after a host loss: its processes SIGKILLed, until every instance is Ready elsewhere.
    victim = "h1"
    survivors = {f"host-{h}" for h in fleet.host_names if h != victim}
    lost = time.monotonic()
    fleet.net.kill_all(victim)

    def settled() -> bool:
        running = [r for r in fleet.replicas(name) if r["desired_state"] == "running"]
        return (
            _in_service(fleet, name)
            and len(running) == 3
            and all(r["state"] == "Ready" and r["host_id"] in survivors for r in running)
        )

    wait_for(settled, 180, interval=0.05, what="re-placement", state=fleet.logs)
    moved = time.monotonic() - lost
    print(
        f"host lost (SIGKILL): instances re-placed and Ready in {moved:.2f} s "
        f"(heartbeat timeout {fleet.spec.heartbeat_timeout} s)"
    )
