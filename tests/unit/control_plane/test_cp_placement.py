"""Placement on its own: which live host takes an instance, and how used chips are counted."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from neurondock_platform.services.placement import HostCapacity, InsufficientCapacity, capacities, choose_host


def test_the_host_with_fewest_replicas_of_the_variant_wins_then_the_most_free_chips():
    hosts = [HostCapacity("h1", 16, 0, 1), HostCapacity("h2", 16, 8, 0), HostCapacity("h3", 16, 4, 0)]
    assert choose_host(hosts, 4).host_id == "h3"  # h2 and h3 hold none of it; h3 has more free chips
    assert choose_host(hosts[:1], 4).host_id == "h1"
    # Equal on both counts: the lowest host id, so two reconcilers pick the same host.
    assert choose_host([HostCapacity("b", 4, 0, 0), HostCapacity("a", 4, 0, 0)], 1).host_id == "a"


def test_an_instance_needs_all_its_chips_on_one_host():
    hosts = [HostCapacity("h1", 4, 2, 0), HostCapacity("h2", 4, 3, 0)]  # 3 free chips in all, 2 at most on one
    with pytest.raises(InsufficientCapacity, match=r"no live host has 4 free .*h1=2, h2=1"):
        choose_host(hosts, 4)
    with pytest.raises(InsufficientCapacity, match="no live hosts"):
        choose_host([], 1)


def test_capacities_count_only_running_replicas_on_live_hosts():
    now = dt.datetime.now(dt.UTC)
    live = [
        SimpleNamespace(id="h1", chips=16, last_heartbeat=now),
        SimpleNamespace(id="h2", chips=4, last_heartbeat=now),
    ]
    replicas = [
        SimpleNamespace(id=1, host_id="h1", desired_state="running", variant_id=7),
        SimpleNamespace(id=2, host_id="h1", desired_state="running", variant_id=8),
        SimpleNamespace(id=3, host_id="h1", desired_state="stopped", variant_id=7),  # being retired: frees its chips
        SimpleNamespace(id=4, host_id="lost", desired_state="running", variant_id=7),  # not a live host
    ]
    table = {c.host_id: c for c in capacities(live, replicas, {1: 4, 2: 1, 3: 4, 4: 4}, variant_id=7)}
    assert (table["h1"].used_chips, table["h1"].replicas_of_variant, table["h1"].free_chips) == (5, 1, 11)
    assert (table["h2"].used_chips, table["h2"].free_chips) == (0, 4)
    assert set(table) == {"h1", "h2"}
