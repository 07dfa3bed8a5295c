"""The fleet views as services (not through the admin API): chips, cores, owners, redaction, neuron-ls."""

from __future__ import annotations

import pytest
from tests.conftest import ACCOUNT_ID
from tests.support.world import build_endpoint

from neurondock_platform.db import session_scope
from neurondock_platform.models import Replica
from neurondock_platform.services import fleet
from neurondock_platform.services.accounts import create_account


@pytest.fixture
def tenant_id(session_factory) -> str:
    with session_scope(session_factory) as session:
        account, _ = create_account(session, "tenant")
        return account.id


def test_an_inf1_instance_holds_whole_chips_and_its_replicas_split_the_cores(session_factory, settings):
    # One ml.inf1.6xlarge (4 chips) with 4 replicas: each gets one chip's four NeuronCores, derived from placement.
    built = build_endpoint(session_factory, settings, "big", instance_type="ml.inf1.6xlarge", replicas_per_instance=4)
    with session_scope(session_factory) as session:
        (view,) = fleet.list_hosts(session, settings, account_id=None)
    assert view.host.id == settings.host_id and view.live and view.local
    assert len(view.chips) == 16 and view.used_chips == 4
    replicas = {r.id: r for r in view.replicas}
    assert sorted(replicas) == sorted(built["replica_ids"])
    held = [replicas[rid] for rid in built["replica_ids"]]
    assert [r.chips for r in held] == [[0], [1], [2], [3]]
    assert [r.cores for r in held] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert {r.cores_source for r in held} == {"derived"}
    summary = view.to_json(detail=False)
    assert (summary["chips_in_use"], summary["neuron_cores_in_use"], summary["chip_count"]) == (4, 16, 16)


def test_cores_the_runtime_reported_win_over_derived_ones(session_factory, settings):
    built = build_endpoint(session_factory, settings, "rep", instance_type="ml.inf1.xlarge")
    (replica_id,) = built["replica_ids"]
    with session_scope(session_factory) as session:
        row = session.get(Replica, replica_id)
        assert row is not None
        row.extra = {**row.extra, "cores": [8, 9, 10, 11]}  # chip 2, as the replica's NEURON_RT_VISIBLE_CORES said
    with session_scope(session_factory) as session:
        view = fleet.get_host(session, settings, settings.host_id, account_id=ACCOUNT_ID)
    (replica,) = view.replicas
    assert (replica.cores, replica.chips, replica.cores_source) == ([8, 9, 10, 11], [2], "reported")
    assert [c.replica_id for c in view.chips[2].cores] == [replica_id] * 4
    assert all(c.replica_id is None for chip in view.chips if chip.index != 2 for c in chip.cores)


def test_another_accounts_replicas_are_occupied_capacity_without_names(session_factory, settings, tenant_id):
    build_endpoint(session_factory, settings, "mine", instance_type="ml.inf1.xlarge")
    build_endpoint(session_factory, settings, "theirs", instance_type="ml.inf1.xlarge", account_id=tenant_id)
    with session_scope(session_factory) as session:
        as_tenant = fleet.get_host(session, settings, settings.host_id, account_id=tenant_id)
        as_admin = fleet.get_host(session, settings, settings.host_id, account_id=None)
    assert as_tenant.used_chips == as_admin.used_chips == 2  # the capacity is the same for everyone
    visible = {r.endpoint_name: r.visible for r in as_tenant.replicas}
    assert visible == {"mine": False, "theirs": True}
    hidden = next(r for r in as_tenant.replicas if not r.visible)
    assert hidden.to_json() == {
        "id": hidden.id,
        "host_id": settings.host_id,
        "owner": fleet.HIDDEN_OWNER,
        "state": "Ready",
        "chips": hidden.chips,
        "neuron_cores": hidden.cores,
    }
    listing = fleet.neuron_ls(as_tenant)
    commands = [p["command"] for d in listing["neuron_devices"] for p in d["neuron_processes"]]
    assert sorted(commands) == [fleet.HIDDEN_OWNER, "neurondock-replica theirs/AllTraffic"]
    assert all(
        p["pid"] is None
        for d in listing["neuron_devices"]
        for p in d["neuron_processes"]
        if p["command"] == fleet.HIDDEN_OWNER
    )


def test_neuron_ls_chains_the_chips_like_an_inf1_host(session_factory, settings):
    build_endpoint(session_factory, settings, "ls", instance_type="ml.inf1.xlarge", host_chips=4)
    with session_scope(session_factory) as session:
        listing = fleet.neuron_ls(fleet.get_host(session, settings, settings.host_id, account_id=None))
    assert listing["emulated"] is True
    devices = listing["neuron_devices"]
    assert [d["connected_to"] for d in devices] == [[1], [2, 0], [3, 1], [2]]
    assert [d["bdf"] for d in devices] == ["0000:00:1c.0", "0000:00:1d.0", "0000:00:1e.0", "0000:00:1f.0"]
    assert (
        devices[0]["neuroncore_ids"] == [0, 1, 2, 3] and devices[0]["memory_size"] == fleet.DEVICE_MEMORY_BYTES_PER_CHIP
    )


def test_an_endpoints_replicas_and_a_missing_host(session_factory, settings):
    first = build_endpoint(session_factory, settings, "one", instance_type="ml.inf1.xlarge")
    build_endpoint(session_factory, settings, "two", instance_type="ml.c5.large")
    with session_scope(session_factory) as session:
        from neurondock_platform.models import Endpoint

        endpoint = session.get(Endpoint, first["endpoint_id"])
        assert endpoint is not None
        replicas = fleet.endpoint_replicas(session, settings, endpoint)
        assert [r.id for r in replicas] == first["replica_ids"] and replicas[0].cores == [0, 1, 2, 3]
        with pytest.raises(fleet.HostNotFound, match="Could not find host 'nowhere'"):
            fleet.get_host(session, settings, "nowhere", account_id=None)
        with pytest.raises(fleet.HostNotFound):
            fleet.get_host(session, settings, "x" * 200, account_id=None)
