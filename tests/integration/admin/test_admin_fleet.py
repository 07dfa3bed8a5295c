"""What operators look at: replicas on hosts with their emulated NeuronCores, logs, errors, metrics, history."""

from __future__ import annotations

import datetime as dt

import pytest


def test_endpoint_detail_shows_variants_replicas_hosts_and_cores(api, world, settings):
    world("small", instance_type="ml.inf1.xlarge", count=2)
    world("big", instance_type="ml.inf1.6xlarge", count=1)
    small = api.ok("GET", "/endpoints/small")
    variant = small["variants"][0]
    assert variant["hardware"]["neuron_cores"] == 4 and variant["hardware"]["emulated"] is True
    replicas = variant["replicas"]
    assert [r["chips"] for r in replicas] == [[0], [1]]
    assert [r["neuron_cores"] for r in replicas] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert {r["neuron_cores_source"] for r in replicas} == {"derived"}
    assert all(r["host_id"] == settings.host_id and r["state"] == "Ready" for r in replicas)
    # The replica "process" is this test process, on this host: its memory is read from /proc.
    assert replicas[0]["host_memory_bytes"] > 1024 * 1024
    big = api.ok("GET", "/endpoints/big")["variants"][0]["replicas"][0]
    assert big["chips"] == [2, 3, 4, 5] and big["neuron_cores"] == list(range(8, 24))

    host = api.ok("GET", f"/hosts/{settings.host_id}")
    assert host["emulated"] and host["live"]
    assert host["chip_count"] == 16 and host["neuron_core_count"] == 64
    assert host["chips_in_use"] == 6 and host["neuron_cores_in_use"] == 24
    chip0 = host["chips"][0]
    assert chip0["pci_bdf"] == "0000:00:1c.0" and chip0["connected_to"] == [1]
    assert chip0["neuron_cores"][0]["owner"] == "small/AllTraffic"
    assert chip0["neuron_cores"][0]["utilization_percent"] is None  # needs the runtime's counters
    assert host["chips"][6]["neuron_cores"][0]["in_use"] is False

    hosts = api.ok("GET", "/hosts")
    assert hosts["emulated"] and "chips" not in hosts["items"][0]
    assert "chips" in api.ok("GET", "/hosts", query={"detail": "true"})["items"][0]
    assert api.get("/hosts/no-such-host").status_code == 404

    ls = api.ok("GET", f"/hosts/{settings.host_id}/neuron-ls")
    assert ls["emulated"] and len(ls["neuron_devices"]) == 16
    assert ls["neuron_devices"][2]["neuron_processes"][0]["command"] == "neurondock-replica big/AllTraffic"
    assert ls["neuron_devices"][3]["connected_to"] == [4, 2]


def test_replicas_of_one_instance_split_its_cores(api, world):
    world("e1", instance_type="ml.inf1.xlarge", count=2, replicas_per_instance=4)
    replicas = api.ok("GET", "/endpoints/e1/replicas")["items"]
    assert [r["neuron_cores"] for r in replicas] == [[i] for i in range(8)]
    assert [r["chips"] for r in replicas] == [[0]] * 4 + [[1]] * 4


def test_cores_the_runtime_reports_win_over_derived_ones(api, world, session_factory):
    from neurondock_platform.db import session_scope
    from neurondock_platform.models import Replica

    ids = world("e1", instance_type="ml.inf1.xlarge")["replica_ids"]
    with session_scope(session_factory) as session:
        replica = session.get(Replica, ids[0])
        replica.extra = {**replica.extra, "cores": [12, 13, 14, 15], "device_memory_bytes": 33_602_652}
    r = api.ok("GET", "/endpoints/e1/replicas")["items"][0]
    assert r["neuron_cores"] == [12, 13, 14, 15] and r["chips"] == [3]
    assert r["neuron_cores_source"] == "reported" and r["device_memory_bytes"] == 33_602_652
    assert r["device_memory_source"] == "reported"


def test_logs_tail_and_follow_with_a_cursor(api, world, settings):
    rid = world("e1", instance_type="ml.c5.large")["replica_ids"][0]
    log = settings.replicas_dir / str(rid) / "replica.log"
    log.parent.mkdir(parents=True)
    log.write_text("--- neurondock: starting replica\nline 1\nline 2\n")
    first = api.ok("GET", "/endpoints/e1/logs")
    chunk = first["replicas"][0]
    assert chunk["source"] == "file" and chunk["lines"][-2:] == ["line 1", "line 2"]
    with log.open("a") as f:
        f.write("line 3\npartial")
    more = api.ok("GET", "/endpoints/e1/logs", query={"cursor": first["cursor"]})
    assert more["replicas"][0]["lines"] == ["line 3"]  # the unfinished line waits
    with log.open("a") as f:
        f.write(" done\n")
    rest = api.ok("GET", "/endpoints/e1/logs", query={"cursor": more["cursor"]})
    assert rest["replicas"][0]["lines"] == ["partial done"]
    assert api.ok("GET", "/endpoints/e1/logs", query={"lines": 1})["replicas"][0]["lines"] == ["partial done"]
    assert api.get("/endpoints/e1/logs", query={"cursor": "bogus"}).status_code == 400
    assert api.ok("GET", "/endpoints/e1/logs", query={"replica_id": rid + 999})["replicas"] == []


def test_logs_fall_back_to_the_stored_tail_when_the_file_is_elsewhere(api, world):
    world("e1", instance_type="ml.c5.large")
    chunk = api.ok("GET", "/endpoints/e1/logs")["replicas"][0]
    assert chunk["source"] == "database"
    assert chunk["lines"] == ["stored tail line", "invocation failed with status 500: stored boom"]


def _write_points(session_factory, rows):
    from neurondock_platform.db import session_scope
    from neurondock_platform.services import metrics

    with session_scope(session_factory) as session:
        metrics.write_points(session, rows)


def _point(metric, value, *, minutes_ago, count=1, replica_id=None, samples=None):
    from neurondock_platform import sagemaker_metrics as sm
    from neurondock_platform.sketch import Sketch

    now = dt.datetime.now(dt.UTC)
    if minutes_ago:
        start = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=minutes_ago)
    else:
        # The current 10 s period, as a flusher stamps it: a minute's start could be over a minute old
        # by the time the API reads "the last 60 s" (it failed so on a slow run near a minute's end).
        start = now.replace(second=now.second - now.second % 10, microsecond=0)
    dims = sm.variant_dimensions("e1", "AllTraffic")
    if replica_id is not None:
        dims = sm.replica_dimensions("e1", "AllTraffic", replica_id)
    return {
        "account_id": "123456789012",
        "namespace": sm.namespace(metric),
        "metric_name": metric,
        "dimensions": dims,
        "period_start": start,
        "period_seconds": 10,
        "sum": value,
        "sample_count": count,
        "minimum": min(samples) if samples else value / count,
        "maximum": max(samples) if samples else value / count,
        "sketch": Sketch.of((v, 1) for v in samples).to_json() if samples else None,
        "unit": sm.unit(metric),
        "buckets": None,
        "source": "test",
    }


def test_metrics_come_from_the_store_the_data_plane_writes(api, world, session_factory):
    rid = world("e1", instance_type="ml.inf1.xlarge")["replica_ids"][0]
    empty = api.ok("GET", "/endpoints/e1/metrics", query={"metric": "ModelLatency", "statistic": "p99"})
    assert empty["available"] is True and empty["points"] == [] and empty["unit"] == "Microseconds"
    setup = api.ok("GET", "/endpoints/e1/metrics", query={"metric": "ModelSetupTime", "statistic": "Maximum"})
    assert setup["points"][0]["value"] == 1_250_000.0 and "replicas" in setup["source"]

    _write_points(
        session_factory,
        [
            _point("Invocations", 30.0, minutes_ago=3, count=30),
            _point("Invocations", 60.0, minutes_ago=2, count=60),
            _point("ModelLatency", 900.0, minutes_ago=2, count=3, samples=[250.0, 250.0, 400.0]),
            _point("NeuronCoreUtilization", 42.0, minutes_ago=0, replica_id=rid),
        ],
    )
    got = api.ok("GET", "/endpoints/e1/metrics", query={"metric": "Invocations", "statistic": "Sum"})
    assert [p["value"] for p in got["points"]] == [30.0, 60.0] and "metrics store" in got["source"]
    latency = api.ok("GET", "/endpoints/e1/metrics", query={"metric": "ModelLatency", "statistic": "p50"})
    assert [p["value"] for p in latency["points"]] == [pytest.approx(250.0, rel=0.01)]  # the sketch's 1 %
    count = api.ok("GET", "/endpoints/e1/metrics", query={"metric": "ModelLatency", "statistic": "SampleCount"})
    assert [p["value"] for p in count["points"]] == [3.0]

    observed = api.ok("GET", "/endpoints/e1/costs")["per_million_at_observed_traffic"]
    assert observed["invocations_per_hour"] == 90.0
    assert observed["usd"] == pytest.approx(0.228 * 1e6 / 90, rel=1e-3)

    replica = api.ok("GET", "/endpoints/e1/replicas")["items"][0]
    assert replica["utilization_percent"] == 42.0
    core = api.ok("GET", "/hosts/host-test")["chips"][0]["neuron_cores"][0]
    assert core["utilization_percent"] == 42.0

    bad = api.get("/endpoints/e1/metrics", query={"start": "2030-01-01T00:00:00Z", "end": "2029-01-01T00:00:00Z"})
    assert bad.status_code == 400
    assert api.get("/endpoints/e1/metrics", query={"period": 15}).status_code == 400
    assert api.get("/endpoints/e1/metrics", query={"period": 10, "start": "2020-01-01T00:00:00Z"}).status_code == 400


def test_history_puts_recorded_status_changes_beside_replica_records(api, world):
    world("e1", instance_type="ml.c5.large")
    history = api.ok("GET", "/endpoints/e1/history")
    items = history["items"]
    changes = [e["detail"] for e in items if e["event"] == "StatusChanged"]
    # From the event log: created as Creating, then flipped to InService by the fixture.
    assert changes[0].startswith("Creating") and changes[-1].startswith("Creating → InService")
    events = [e["event"] for e in items]
    assert "ReplicaPlaced" in events and "ReplicaReady" in events
    times = [e["time"] for e in items]
    assert times == sorted(times)
    assert "event log" in history["note"]
