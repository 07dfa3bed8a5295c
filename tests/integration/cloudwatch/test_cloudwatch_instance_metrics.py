"""The host agent's instance metrics (CPUUtilization, MemoryUtilization) on a process tree it reads."""

from __future__ import annotations

import datetime as dt

import pytest

from neurondock_workers.hosting.utilization import InstanceUsage, ProcessUse, read_processes, read_trees, tree_use


def test_a_process_tree_adds_up():
    table = {
        10: ProcessUse(1, 100, 1000),  # bubblewrap
        11: ProcessUse(10, 400, 50_000),  # the replica under it
        12: ProcessUse(11, 50, 2000),  # a helper of the replica
        20: ProcessUse(1, 999, 999),  # someone else
    }
    assert tree_use(10, table) == (550, 53_000)
    assert tree_use(99, table) == (0, 0)
    here = read_processes()
    assert len(here) > 1 and all(u.rss_bytes >= 0 for u in here.values())


def test_reading_a_tree_finds_the_same_processes_as_the_full_scan():
    import os
    import signal
    import subprocess
    import sys

    from tests.support.waiting import wait_for

    # A child with a grandchild, as bubblewrap runs a replica; a process outside the tree stays out.
    script = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])"
    tree = subprocess.Popen([sys.executable, "-c", script])
    outside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    grandchildren: list[int] = []

    def below() -> list[int]:
        grandchildren[:] = [pid for pid, use in read_processes().items() if use.ppid == tree.pid]
        return grandchildren

    try:
        wait_for(below, 10, what="the grandchild")
        found = read_trees([tree.pid])
        assert set(found) == {tree.pid, *grandchildren}
        assert found[grandchildren[0]].ppid == tree.pid and found[tree.pid].rss_bytes > 0
        assert read_trees([outside.pid])
        assert outside.pid not in found
    finally:
        for pid in grandchildren:
            os.kill(pid, signal.SIGKILL)
        for proc in (tree, outside):
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_instance_usage_per_variant(session_factory, world, cw):
    from neurondock_platform.db import session_scope
    from neurondock_platform.models import Replica
    from neurondock_platform.services import metrics

    ids = world("cpu", instance_type="ml.c5.xlarge", count=2)["replica_ids"]  # 4 vCPUs, 8 GiB each
    with session_scope(session_factory) as session:
        for index, rid in enumerate(ids):
            session.get(Replica, rid).extra = {"instance": index}
    pids = {ids[0]: 1000, ids[1]: 2000}
    ticks = {1000: 0, 2000: 0}

    def table(roots: list[int]) -> dict[int, ProcessUse]:
        return {
            1000: ProcessUse(1, ticks[1000], 2 * 1024**3),  # 2 GiB of 8: 25 %
            1001: ProcessUse(1000, 0, 0),
            2000: ProcessUse(1, ticks[2000], 1024**3),
        }

    usage = InstanceUsage(session_factory, "host-test", lambda: pids, 10, read=table)
    start = 1_767_225_600.0
    assert {r["metric_name"] for r in usage.rows(start)} == {"MemoryUtilization"}  # CPU needs two looks
    ticks[1000], ticks[2000] = 3 * 100 * 10, 1 * 100 * 10  # 3 and 1 cores busy for 10 s (100 ticks/s)
    rows = {r["metric_name"]: r for r in usage.rows(start + 10)}
    cpu, memory = rows["CPUUtilization"], rows["MemoryUtilization"]
    assert cpu["namespace"] == "/aws/sagemaker/Endpoints" and cpu["unit"] == "Percent"
    assert cpu["dimensions"] == (("EndpointName", "cpu"), ("VariantName", "AllTraffic"))
    assert (cpu["sample_count"], cpu["minimum"], cpu["maximum"]) == (2, pytest.approx(100), pytest.approx(300))
    assert (memory["minimum"], memory["maximum"]) == (12.5, 25.0)
    assert cpu["period_start"] == dt.datetime.fromtimestamp(start, dt.UTC)
    with session_scope(session_factory) as session:
        metrics.write_points(session, list(rows.values()))
    (point,) = cw.get_metric_statistics(
        Namespace="/aws/sagemaker/Endpoints",
        MetricName="CPUUtilization",
        Dimensions=[{"Name": "EndpointName", "Value": "cpu"}, {"Name": "VariantName", "Value": "AllTraffic"}],
        StartTime=dt.datetime.fromtimestamp(start, dt.UTC),
        EndTime=dt.datetime.fromtimestamp(start + 60, dt.UTC),
        Period=60,
        Statistics=["Average", "Maximum"],
    )["Datapoints"]
    assert (point["Average"], point["Maximum"]) == (pytest.approx(200), pytest.approx(300))
