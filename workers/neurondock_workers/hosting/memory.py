"""How much memory a replica holds, and when it has grown enough to ask for a fresh process.

A model server that leaks (a handler caching every request, a fragmenting allocator) grows until the
host runs out of memory; TorchServe, Triton, Ray Serve and BentoML all have open issues about it
(docs/runtime.md, "Memory growth"). A replica measures its resident set when it becomes ready and, at most every
``CHECK_INTERVAL`` seconds, after executions. Past the limit it asks the host agent, through its
health answer, to be replaced by a fresh process; the agent does that without failing a request.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

MIB = 1024 * 1024
# Reading /proc/self/statm costs a few microseconds; twice a second is plenty to catch a leak.
CHECK_INTERVAL = 0.5
LIMIT_ENV = "NEURONDOCK_MAX_MEMORY_GROWTH_MB"
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# How long a replica's model sits idle after executions before its free heap goes back to the kernel.
# A trim costs <1 ms and the next execution ~1 ms of page faults, once per idle spell: at 5 s a replica
# read three quiet seconds after its last answer still held ~11 MB it gives back (docs/measured.md).
IDLE_TRIM_SECONDS = 2.0


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None  # not glibc


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the kernel (glibc's ``malloc_trim``; nothing elsewhere).

    glibc keeps what an execution freed (a ResNet-18's activations) in the arena of the thread that
    ran it, resident for good. Trimmed, an idle ResNet-18 replica here holds up to ~10 MB less, and
    its next execution pays the page faults back: ~1 ms of a 45 ms call (docs/measured.md).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def rss_bytes(pid: int | str = "self") -> int:
    """Return a process's resident set size in bytes (0 where /proc is unavailable)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def smaps_rollup(pid: int | str = "self") -> dict[str, int]:
    """Return ``/proc/<pid>/smaps_rollup`` in bytes (Rss, Pss, Shared_Clean, Private_Dirty, ...)."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                values[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return values


def limit_from_env(env: Mapping[str, str] | None = None) -> float:
    """Read the growth limit in MiB from ``NEURONDOCK_MAX_MEMORY_GROWTH_MB``; 0 means no limit."""
    raw = ((os.environ if env is None else env).get(LIMIT_ENV) or "").strip()
    if not raw:
        return 0.0
    try:
        return max(0.0, float(raw))
    except ValueError as exc:
        raise ValueError(f"{LIMIT_ENV} must be a number of MiB, got {raw!r}") from exc


class GrowthWatch:
    """Compares the replica's RSS with its size when it became ready, cheaply and at most so often."""

    def __init__(
        self,
        limit_mb: float,
        interval: float = CHECK_INTERVAL,
        read: Callable[[], int] = rss_bytes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit_mb = limit_mb
        self.interval = interval
        self._read = read
        self._clock = clock
        self.baseline = 0
        self.rss = 0
        self._checked_at = 0.0
        # Once set it stays set: the process is to be replaced, whatever its RSS does next.
        self.recycle_reason: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GrowthWatch:
        """Build a watch with the limit from the environment."""
        return cls(limit_from_env(env))

    def start(self) -> None:
        """Take the baseline: the RSS of a replica that has just loaded its model and is ready."""
        self.baseline = self.rss = self._read()
        self._checked_at = self._clock()

    @property
    def growth_mb(self) -> float:
        return max(0, self.rss - self.baseline) / MIB

    def check(self, force: bool = False) -> str | None:
        """Measure if the last measurement is old enough; return the recycle reason once past the limit."""
        if self.recycle_reason is not None or not self.baseline:
            return self.recycle_reason
        now = self._clock()
        if not force and now - self._checked_at < self.interval:
            return None
        self._checked_at = now
        self.rss = self._read()
        if 0 < self.limit_mb < self.growth_mb:
            self.recycle_reason = f"RSS grew by {self.growth_mb:.0f} MiB past the limit {self.limit_mb:g} MiB"
            # The replica log is where users look first; the agent adds a line when it has replaced us.
            print(
                f"neurondock: {self.recycle_reason} since the replica became ready "
                f"({self.baseline / MIB:.0f} MiB → {self.rss / MIB:.0f} MiB); asking to be recycled",
                file=sys.stderr,
                flush=True,
            )
        return self.recycle_reason

    def snapshot(self) -> dict[str, Any]:
        """Describe the replica's memory for its health answer."""
        self.check()
        snap: dict[str, Any] = {
            "rss_mb": round(self.rss / MIB, 1),
            "rss_growth_mb": round(self.growth_mb, 1),
            "memory_growth_limit_mb": self.limit_mb,
        }
        if self.recycle_reason is not None:
            snap["recycle"] = self.recycle_reason
        return snap
