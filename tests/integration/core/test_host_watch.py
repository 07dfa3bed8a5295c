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
    later = now + dt.timedelta(seconds=host_health.WATCH_LEASE_SECONDS + 2)
    with session_scope(session_factory) as session:
        assert host_health.watch(session, 15.0, "worker-b", later) == []
    with session_scope(session_factory) as session:
        assert host_health.watch(session, 15.0, "worker-a", later) is None
