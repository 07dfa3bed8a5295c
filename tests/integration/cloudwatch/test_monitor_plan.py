"""The monitor plans its next pass: at once when an alarm becomes due, half a flush later when nothing is."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import replace

from sqlalchemy import select
from tests.integration.cloudwatch import cw_helpers


def test_an_idle_monitor_passes_every_half_flush_renews_its_lease_at_half_life_and_wakes_for_a_due_alarm(
    cw, db, session_factory, settings
):
    from neurondock_platform.models import Lease
    from neurondock_platform.services import monitor
    from neurondock_platform.services.cloudwatch import evaluator

    aws = replace(settings, metrics_flush_seconds=10.0, scaling_speedup=1.0)
    assert monitor.timing(aws) == cw_helpers.AWS_TIMING
    state = monitor.Monitor(session_factory, aws, "holder-a")
    expiry = lambda: db(lambda s: s.scalar(select(Lease.expires_at).where(Lease.name == monitor.LEASE)))  # noqa: E731
    now = cw_helpers.soon()

    state.tick(now)
    assert state.held and state.next_pass == now + dt.timedelta(seconds=monitor.idle_interval(aws))
    first = expiry()
    state.tick(now + dt.timedelta(seconds=2))
    assert expiry() == first, "a lease with more than half its life left is not written again"
    state.tick(now + monitor.renew_after(aws))
    assert expiry() > first

    # An alarm judged through the minute before: due one minute and a settle after that minute ended.
    cw_helpers.alarm(cw, EvaluationPeriods=1, DatapointsToAlarm=1)
    cw_helpers.backdate(db, cw_helpers.minute(now, 0))
    due = cw_helpers.minute(now, 1) + dt.timedelta(seconds=cw_helpers.AWS_TIMING.settle)
    assert due == evaluator.due_at(cw_helpers.minute(now, 0), 60, cw_helpers.AWS_TIMING)
    before = due - dt.timedelta(seconds=2)
    state.tick(before)
    assert state.next_pass == due, "the pass lands on the alarm's due time, not the next idle pass"
    assert state.pause(before) == 2.0
    assert state.tick(due)["alarms_judged"] == 1
    after = due + dt.timedelta(seconds=monitor.interval(aws))
    assert state.next_pass == after, "a pass that had an alarm due looks again after one interval"
    assert "alarms_judged" not in state.tick(after)
    # Judged: nothing is due for a minute; the lease renewed at ``before`` comes first.
    assert state.next_pass == before + monitor.renew_after(aws)


def test_due_at_is_the_first_moment_an_alarm_has_a_whole_period_to_judge():
    from neurondock_platform.services.cloudwatch import evaluator

    timing = cw_helpers.AWS_TIMING
    base = dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)
    for period in (10, 60, 300):
        for offset in (0, 7, 60, 299):
            through = base + dt.timedelta(seconds=offset)
            due = evaluator.due_at(through, period, timing)
            assert evaluator.period_end(due, period, timing) > through
            assert evaluator.period_end(due - dt.timedelta(milliseconds=1), period, timing) <= through


def test_a_monitor_lease_held_by_a_gone_process_of_this_machine_is_taken_at_once(session_factory, settings):
    import socket
    import subprocess

    from neurondock_platform.services import monitor

    dead = subprocess.Popen(["true"])
    dead.wait()
    now = cw_helpers.soon()
    elsewhere = monitor.Monitor(session_factory, settings, f"another-machine:{dead.pid}:0")
    elsewhere.tick(now)
    successor = monitor.Monitor(session_factory, settings, f"{socket.gethostname()}:{os.getpid()}:1")
    successor.tick(now + dt.timedelta(seconds=1))
    assert elsewhere.held and not successor.held, "another machine's pid says nothing here: its lease is waited out"

    later = now + dt.timedelta(seconds=monitor.lease_seconds(settings) + 1)
    predecessor = monitor.Monitor(session_factory, settings, f"{socket.gethostname()}:{dead.pid}:0")
    predecessor.tick(later)
    successor.tick(later + dt.timedelta(seconds=1))
    assert predecessor.held and successor.held, "the predecessor's process is gone: its lease is not waited out"
