"""The replica's hang watchdog: it sleeps until an execution could be past its limit, then ends the replica."""

from __future__ import annotations

import queue
import threading
import time
from types import SimpleNamespace

from neurondock_workers.hosting.replica import HangWatchdog


def test_an_execution_that_starts_while_the_watchdog_sleeps_is_ended_once_past_its_limit(monkeypatch):
    stats = SimpleNamespace(running_since_ns=0)
    dog = HangWatchdog(stats, 0.1)
    ended: queue.Queue[float] = queue.Queue()

    def end(elapsed: float) -> None:
        ended.put(elapsed)
        threading.Event().wait()  # the real one never returns either (it ends the process)

    monkeypatch.setattr(dog, "_end", end)
    dog.start()
    # Started after the watchdog's first look (it saw nothing running), and never finishes.
    stats.running_since_ns = time.perf_counter_ns()
    elapsed = ended.get(timeout=30)
    assert elapsed > dog.limit_ns / 1e9
