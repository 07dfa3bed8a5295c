"""The C heap of the platform's long-lived processes: glibc's arenas capped before threads start."""

from __future__ import annotations

import subprocess
import sys

import pytest

_ARENAS_AFTER_THREADS = """
import ctypes, threading
from neurondock_platform import heap
if {limit}:
    heap.limit_arenas()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
together = threading.Barrier(6)


def allocate():
    libc.malloc(1000)
    together.wait()  # all six alive at once: an exited thread's arena would be handed to the next


threads = [threading.Thread(target=allocate) for _ in range(6)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc.malloc_stats()  # one "Arena N:" paragraph per arena, on stderr
"""


def _arenas(limit: bool) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _ARENAS_AFTER_THREADS.format(limit=limit)], capture_output=True, text=True, check=True
    )
    return sum(line.startswith("Arena ") for line in out.stderr.splitlines())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_threads_share_two_arenas_once_limited():
    assert _arenas(limit=False) > 2  # glibc's default: a new arena for each new thread that allocates
    assert _arenas(limit=True) == 2
