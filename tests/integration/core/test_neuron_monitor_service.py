"""neuron-monitor's document as a service: its skeleton, who counts as a runtime, and no guessed figures
for a host whose /proc this process cannot see (docs/neuron-tools.md)."""

from __future__ import annotations

import datetime as dt

from tests.support.world import build_endpoint

from neurondock_platform.db import session_scope
from neurondock_platform.services import fleet, neuron_monitor
from neurondock_platform.services.accounts import create_account


def test_the_document_has_the_real_tools_groups_and_says_it_is_emulated(session_factory, settings):
    built = build_endpoint(session_factory, settings, "mon", instance_type="ml.inf1.xlarge", host_chips=4)
    now = dt.datetime.now(dt.UTC)
    with session_scope(session_factory) as session:
        view = fleet.get_host(session, settings, settings.host_id, account_id=None)
        doc = neuron_monitor.report(session, view, region=settings.region, period_seconds=30, now=now)
    assert set(doc) == {"neuron_runtime_data", "system_data", "instance_data", "neuron_hardware_info"}
    assert doc["instance_data"]["emulated"] is True
    assert doc["neuron_hardware_info"] == {"neuron_device_count": 4, "neuroncore_per_device_count": 4, "error": ""}
    counters = doc["system_data"]["neuron_hw_counters"]
    assert counters["period"] == 30 and len(counters["neuron_devices"]) == 4
    assert all(d["mem_ecc_corrected"] == d["mem_ecc_uncorrected"] == 0 for d in counters["neuron_devices"])
    (runtime,) = doc["neuron_runtime_data"]
    assert runtime["neuron_runtime_tag"] == f"mon/AllTraffic/replica-{built['replica_ids'][0]}"
    in_use = runtime["report"]["neuroncore_counters"]["neuroncores_in_use"]
    assert sorted(in_use) == ["0", "1", "2", "3"]
    # Nothing recorded in the period: no utilization and no latencies rather than made-up ones.
    stats = runtime["report"]["inference_stats"]
    assert stats["inference_summary"]["completed"] == 0
    assert stats["latency_stats"]["total_latency"] is None


def test_a_remote_host_carries_errors_instead_of_this_machines_figures(session_factory, settings):
    build_endpoint(session_factory, settings, "far", instance_type="ml.inf1.xlarge", host_chips=4)
    elsewhere = settings.with_overrides(host_id="host-elsewhere")  # this API process runs on another host
    with session_scope(session_factory) as session:
        view = fleet.get_host(session, elsewhere, settings.host_id, account_id=None)
        assert not view.local
        doc = neuron_monitor.report(session, view, region=settings.region)
    system = doc["system_data"]
    assert system["vcpu_usage"] == {"error": neuron_monitor.NOT_LOCAL}
    assert system["memory_info"] == {"error": neuron_monitor.NOT_LOCAL}


def test_only_the_callers_replicas_are_runtimes(session_factory, settings):
    with session_scope(session_factory) as session:
        account, _ = create_account(session, "tenant")
        tenant_id = account.id
    build_endpoint(session_factory, settings, "mine", instance_type="ml.inf1.xlarge", account_id=tenant_id)
    build_endpoint(session_factory, settings, "other", instance_type="ml.inf1.xlarge")
    build_endpoint(session_factory, settings, "cpu", instance_type="ml.c5.large", account_id=tenant_id)
    with session_scope(session_factory) as session:
        view = fleet.get_host(session, settings, settings.host_id, account_id=tenant_id)
        doc = neuron_monitor.report(session, view, region=settings.region)
    # Another account's replica is not shown; a CPU replica holds no NeuronCores, so it is no Neuron runtime.
    assert [r["neuron_runtime_tag"].split("/")[0] for r in doc["neuron_runtime_data"]] == ["mine"]
