"""An idle platform's waiting threads wake once per planned pass, not in slices (counted on a fake clock)."""

from __future__ import annotations

import threading
from types import SimpleNamespace


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class _QuietBell:
    """A doorbell nobody rings: each wait lets its whole timeout pass on the clock, and is counted."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        self.clock.now += timeout
        return False


def test_the_monitor_thread_sleeps_a_planned_pause_in_one_wait(monkeypatch):
    from neurondock_workers import monitor

    clock = _Clock()
    monkeypatch.setattr(monitor, "time", SimpleNamespace(monotonic=clock.monotonic))
    bell = _QuietBell(clock)
    assert monitor._sleep(threading.Event(), bell, earliest=1.0, planned=10.0)  # type: ignore[arg-type]
    assert bell.waits == [10.0] and clock.now == 10.0


def test_the_supervisors_watch_wakes_at_most_once_a_minute_while_its_children_run(monkeypatch):
    from neurondock_platform import watch

    clock, waits = _Clock(), []
    child = SimpleNamespace(alive=lambda: True)
    supervisor = watch.Watch([child], None, 1.0)  # type: ignore[list-item]

    def select(readable, writable, errors, timeout):
        # Nothing rings: the wait lasts its whole timeout, on the clock.
        waits.append(timeout)
        clock.now += timeout
        if clock.now >= 60.0:
            supervisor.stopping = True
        return [], [], []

    monkeypatch.setattr(watch, "select", SimpleNamespace(select=select))
    monkeypatch.setattr(supervisor, "stop", lambda: None)
    assert supervisor.run() == 0
    assert len(waits) == 1  # one wake-up in the minute, the backstop's
