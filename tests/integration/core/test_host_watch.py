"""The lost-host watch: every worker runs it, one at a time looks, and another takes over when it stops."""

from __future__ import annotations

import datetime as dt

from neurondock_platform.db import session_scope, utcnow
from neurondock_platform.models import Host
from neurondock_platform.services import host_health


def test_one_worker_looks_and_another_takes_over_when_it_stops(session_factory):
    now = utcnow()
    with session_scope(session_factory) as session:
        session.add(Host(id="gone", address="10.0.0.1", last_heartbeat=now - dt.timedelta(minutes=5)))
    with session_scope(session_factory) as session:
        assert host_health.watch(session, 15.0, "worker-a", now) == []
    with session_scope(session_factory) as session:
        assert host_health.watch(session, 15.0, "worker-b", now) is None, "a's watch: b does not look"
    with session_scope(session_factory) as session:
        assert host_health.watch(session, 15.0, "worker-a", now + dt.timedelta(seconds=1)) == []
    # worker-a stops renewing: once its lease is past, worker-b looks.
    later = now + dt.timedelta(seconds=host_health.lease_seconds(15.0) + 2)
    with session_scope(session_factory) as session:
        assert host_health.watch(session, 15.0, "worker-b", later) == []
    with session_scope(session_factory) as session:
        assert host_health.watch(session, 15.0, "worker-a", later) is None


def test_the_holder_looks_again_when_the_oldest_heartbeat_would_turn_lost(session_factory):
    now = utcnow()
    with session_scope(session_factory) as session:
        session.add(Host(id="old", address="10.0.0.1", last_heartbeat=now - dt.timedelta(seconds=10)))
        session.add(Host(id="new", address="10.0.0.2", last_heartbeat=now - dt.timedelta(seconds=1)))
    watch = host_health.HostWatch(15.0, "worker-a")
    with session_scope(session_factory) as session:
        done = watch.look(session, now)
    assert done.flipped == []
    assert done.next_look == now + dt.timedelta(seconds=5) + host_health.PAST, "when 'old' turns lost"
    # 'old' heartbeats again: the next look renews the lease at half its life, before 'new' could turn lost.
    with session_scope(session_factory) as session:
        session.get(Host, "old").last_heartbeat = done.next_look
    with session_scope(session_factory) as session:
        again = watch.look(session, done.next_look)
    assert again.next_look == now + dt.timedelta(seconds=host_health.lease_seconds(15.0) / 2)


def test_the_others_look_again_when_the_lease_would_expire(session_factory):
    now = utcnow()
    with session_scope(session_factory) as session:
        assert host_health.HostWatch(15.0, "worker-a").look(session, now).flipped == []
    with session_scope(session_factory) as session:
        other = host_health.HostWatch(15.0, "worker-b").look(session, now + dt.timedelta(seconds=1))
    assert other.flipped is None
    assert other.next_look == now + dt.timedelta(seconds=host_health.lease_seconds(15.0)) + host_health.PAST


def test_a_watch_held_by_a_gone_process_of_this_machine_is_taken_at_once(session_factory):
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    predecessor = f"{socket.gethostname()}:{dead.pid}:0"
    elsewhere = f"another-machine:{dead.pid}:0"
    now = utcnow()
    with session_scope(session_factory) as session:
        assert host_health.watch(session, 15.0, elsewhere, now) == []
    with session_scope(session_factory) as session:
        assert host_health.watch(session, 15.0, "worker-b", now) is None, "another machine's pid says nothing here"
    later = now + dt.timedelta(seconds=host_health.lease_seconds(15.0) + 1)
    with session_scope(session_factory) as session:
        assert host_health.watch(session, 15.0, predecessor, later) == []
    with session_scope(session_factory) as session:
        assert host_health.watch(session, 15.0, "worker-b", later) == [], "its holder is gone: no waiting it out"


def test_gone_names_only_dead_processes_of_this_machine():
    import os
    import socket

    from neurondock_platform.services import leases

    here = socket.gethostname()
    assert not leases.gone(f"{here}:{os.getppid()}:0"), "a live process of this machine"
    assert leases.gone(f"{here}:{os.getpid()}:earlier"), "this pid under another name: an earlier incarnation"
    assert not leases.gone(f"elsewhere-{here}:{os.getpid()}:0") and not leases.gone("worker-a")
