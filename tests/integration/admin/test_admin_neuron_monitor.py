"""neuron-monitor's JSON per host: built from what the data plane recorded, shaped as docs/neuron-tools.md says."""

from __future__ import annotations

import os


def _record(session_factory, replica_id: int, endpoint: str, *, device: bool) -> None:
    """Feed answers through the real collector, then flush its period the way the flusher does."""
    from tests.conftest import ACCOUNT_ID

    from neurondock_platform.dataplane.metrics import MetricsCollector
    from neurondock_platform.services import metrics as metric_service

    collector = MetricsCollector(source="test")
    key = (ACCOUNT_ID, endpoint, "AllTraffic")
    base = {"queue_depth": 0, "queue_limit": 4, "busy_us": 0, "executions": 0}
    busy = device_busy = 0
    for i in range(20):
        busy += 900
        device_busy += 300
        meta = {**base, "status": 200, "busy_us": busy, "executions": i + 1}
        if device:
            meta.update(device_busy_us=device_busy, device_us=300)
        collector.replica_answer(key, replica_id, meta, rtt_us=1000 + 10 * i)
    collector.replica_answer(key, replica_id, {**base, "status": 424}, rtt_us=2000)
    collector.replica_answer(key, replica_id, {**base, "status": 429}, rtt_us=50)
    collector.replica_timeout(key, replica_id)
    rows = collector.take_period()
    with session_factory() as session:
        metric_service.write_points(session, rows)
        session.commit()


def test_neuron_monitor_reports_each_replica_as_a_runtime(api, world, settings, session_factory):
    ids = world("mon", instance_type="ml.inf1.xlarge")["replica_ids"]
    _record(session_factory, ids[0], "mon", device=True)
    doc = api.ok("GET", f"/hosts/{settings.host_id}/neuron-monitor", query={"period": "300"})

    assert doc["instance_data"]["emulated"] is True
    assert doc["neuron_hardware_info"] == {"neuron_device_count": 16, "neuroncore_per_device_count": 4, "error": ""}
    assert len(doc["system_data"]["neuron_hw_counters"]["neuron_devices"]) == 16
    # This process is the "replica" of the fixture and the host is local: /proc is read.
    assert doc["system_data"]["memory_info"]["memory_total_bytes"] > 0
    assert set(doc["system_data"]["vcpu_usage"]["average_usage"]) >= {"user", "system", "idle"}

    (runtime,) = doc["neuron_runtime_data"]
    assert runtime["pid"] == os.getpid() and runtime["neuron_runtime_tag"] == f"mon/AllTraffic/replica-{ids[0]}"
    report = runtime["report"]
    assert sorted(report["neuroncore_counters"]["neuroncores_in_use"]) == ["0", "1", "2", "3"]
    assert report["neuroncore_counters"]["utilization_source"] == "projected device time"
    # The period's recorded NeuronCoreUtilization, not a fixed one-minute average.
    busy = {c["neuroncore_utilization"] for c in report["neuroncore_counters"]["neuroncores_in_use"].values()}
    assert len(busy) == 1 and 0 < busy.pop() <= 100
    stats = report["inference_stats"]
    assert stats["inference_summary"] == {
        "completed": 20,
        "completed_with_err": 1,
        "completed_with_num_err": 0,
        "timed_out": 1,
        "incorrect_input": 0,
        "failed_to_queue": 1,
    }
    assert stats["error_summary"]["model"] == 1 and stats["error_summary"]["transient"] == 1
    total = stats["latency_stats"]["total_latency"]
    # Seconds, as the real tool reports them; the 429 never ran, so it is not in the latencies.
    assert total["p0"] == 0.001 and total["p100"] == 0.002
    assert stats["latency_stats"]["device_latency"]["p50"] == 0.0003
    assert report["memory_used"]["loaded_models"][0]["name"] == "mon-model"
    assert report["neuron_runtime_vcpu_usage"]["vcpu_usage"] is not None


def test_without_projection_the_report_says_utilization_is_measured(api, world, settings, session_factory):
    ids = world("plain", instance_type="ml.inf1.xlarge")["replica_ids"]
    _record(session_factory, ids[0], "plain", device=False)
    doc = api.ok("GET", f"/hosts/{settings.host_id}/neuron-monitor")
    report = doc["neuron_runtime_data"][0]["report"]
    assert report["neuroncore_counters"]["utilization_source"] == "measured execution time"
    assert report["inference_stats"]["latency_stats"]["device_latency"] is None


def test_neuron_monitor_bad_period_and_unknown_host(api, settings):
    assert api.get(f"/hosts/{settings.host_id}/neuron-monitor", query={"period": "0"}).status_code == 400
    assert api.get("/hosts/nowhere/neuron-monitor").status_code == 404
