"""An idle host agent wakes once per heartbeat: full passes and idle replicas' checks ride the beats (fake clock)."""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace

from tests.support.waiting import wait_for
from tests.unit.hosting.test_hosting_agent_states import (  # noqa: F401  (fixtures)
    FakeClock,
    FakeProcess,
    FakeS3,
    add_replica,
    sessions,
    settings,
    step_until,
)

from neurondock_platform.models import ReplicaState
from neurondock_workers.hosting.agent import HostAgent

BEAT = 3.75


def _wake(agent: HostAgent, clock: FakeClock) -> None:
    # What ``HostAgent.run`` does between two waits nobody rings.
    clock.now += agent._pause()
    if agent._pass_due():
        agent.step()
    else:
        agent.tend()


def test_an_idle_agents_full_passes_ride_its_heartbeats_early_never_late(settings, sessions):  # noqa: F811
    clock = FakeClock()
    agent = HostAgent(
        replace(settings, agent_idle_poll_interval=10.0),
        sessions,
        FakeS3,
        process_cls=FakeProcess,
        stop_grace=0.1,
        clock=clock,
        heartbeat_interval=BEAT,
    )
    passes: list[float] = []
    step = agent.step
    agent.step = lambda: (passes.append(clock.now), step())[1]  # type: ignore[method-assign]
    try:
        agent.step()  # registers the host: the first full pass
        start, wakes = clock.now, 0
        while clock.now - start < 60.0:
            _wake(agent, clock)
            wakes += 1
        assert wakes <= 60.0 / BEAT + 1  # one wake-up per beat, full passes included
        assert max(b - a for a, b in itertools.pairwise(passes)) <= 10.0  # never later than the idle poll
    finally:
        agent.shutdown()


def test_idle_replicas_checked_on_alternate_beats_come_to_share_every_other_beat(settings, sessions):  # noqa: F811
    clock = FakeClock()
    agent = HostAgent(
        settings, sessions, FakeS3, process_cls=FakeProcess, stop_grace=0.1, clock=clock, heartbeat_interval=BEAT
    )
    try:
        agent.heartbeat()  # registers the host its replicas are placed on
        first, second = add_replica(sessions), add_replica(sessions)
        for replica_id in (first, second):
            step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY)
        every = agent._health_every(agent._managed[first]) * 10  # idle
        checked: list[tuple[int, float]] = []
        lock = threading.Lock()

        def record(managed) -> None:
            with lock:
                checked.append((managed.replica_id, clock.now))
            managed.checking = False

        agent._check_health = record  # type: ignore[method-assign]
        one, two = agent._managed[first], agent._managed[second]
        for managed in (one, two):
            managed.idle = True
        one.checked_at = clock.now - every + 1.0  # due on the next beat …
        two.checked_at = clock.now - every + 1.0 + 2 * BEAT  # … and the second on the beat after
        agent._last_heartbeat = clock.now
        beats_with_checks = []
        for _ in range(16):  # a minute of beats
            clock.now += BEAT
            before = len(checked)
            agent.tend()
            wait_for(lambda: not one.checking and not two.checking, 5, what="this beat's checks")
            if len(checked) > before:
                beats_with_checks.append(clock.now)
        assert len(beats_with_checks) <= 9  # every other beat (and the first), not every beat
        for replica_id in (first, second):
            times = [t for rid, t in checked if rid == replica_id]
            assert max(b - a for a, b in itertools.pairwise(times)) <= every  # never late
    finally:
        agent.shutdown()
