"""A replica's memory watch: measured cheaply, compared with its size when ready, sticky once tripped."""

from __future__ import annotations

import os

import pytest

from neurondock_workers.hosting.memory import MIB, GrowthWatch, limit_from_env, rss_bytes, smaps_rollup


class Fake:
    def __init__(self) -> None:
        self.rss = 100 * MIB
        self.now = 0.0
        self.reads = 0

    def read(self) -> int:
        self.reads += 1
        return self.rss

    def clock(self) -> float:
        return self.now


def test_growth_past_the_limit_asks_once_and_stays_asked(capsys):
    fake = Fake()
    watch = GrowthWatch(32, interval=0.5, read=fake.read, clock=fake.clock)
    watch.start()

    fake.rss += 20 * MIB
    fake.now = 1.0
    assert watch.check() is None
    fake.rss += 20 * MIB
    fake.now = 2.0
    reason = watch.check()

    assert reason == "RSS grew by 40 MiB past the limit 32 MiB"
    assert "asking to be recycled" in capsys.readouterr().err
    fake.rss = 100 * MIB  # freeing memory afterwards does not take the request back
    fake.now = 3.0
    assert watch.check() == reason
    assert watch.snapshot()["recycle"] == reason


def test_measurements_are_throttled_to_the_interval():
    fake = Fake()
    watch = GrowthWatch(32, interval=0.5, read=fake.read, clock=fake.clock)
    watch.start()
    fake.rss += 64 * MIB
    for step in range(10):
        fake.now = step * 0.04
        assert watch.check() is None
    assert fake.reads == 1, "only the baseline was read within the interval"
    fake.now = 0.6
    assert watch.check() is not None


def test_no_limit_never_asks_but_still_reports():
    fake = Fake()
    watch = GrowthWatch(0, interval=0.0, read=fake.read, clock=fake.clock)
    watch.start()
    fake.rss += 10_000 * MIB
    fake.now = 1.0
    assert watch.check() is None
    snap = watch.snapshot()
    assert snap["rss_growth_mb"] == 10_000.0 and "recycle" not in snap


def test_before_ready_nothing_is_measured():
    fake = Fake()
    watch = GrowthWatch(1, read=fake.read, clock=fake.clock)
    fake.now = 5.0
    assert watch.check() is None and fake.reads == 0


def test_limit_from_env():
    assert limit_from_env({}) == 0.0
    assert limit_from_env({"NEURONDOCK_MAX_MEMORY_GROWTH_MB": "64"}) == 64.0
    with pytest.raises(ValueError, match="NEURONDOCK_MAX_MEMORY_GROWTH_MB must be a number of MiB"):
        limit_from_env({"NEURONDOCK_MAX_MEMORY_GROWTH_MB": "lots"})


def test_real_measurements_of_this_process():
    assert rss_bytes() > 10 * MIB
    rollup = smaps_rollup(os.getpid())
    assert rollup["Rss"] >= rollup["Pss"] > 0
