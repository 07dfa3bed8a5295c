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


_MAPPED_AFTER_A_BIG_FREE = """
import ctypes
from neurondock_platform import heap
if {fixed}:
    heap.fix_thresholds()


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"
    )]


libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.mallinfo2.restype = MallInfo2
libc.free(ctypes.c_void_p(libc.malloc(8 << 20)))  # an 8 MB upload part: mapped on its own, then freed
before = libc.mallinfo2().hblks
libc.malloc(600 << 10)  # a 602 KB request body
print(libc.mallinfo2().hblks - before)  # 1 if it was mapped on its own, 0 if the heap served it
"""


def _body_mapped(fixed: bool) -> bool:
    code = _MAPPED_AFTER_A_BIG_FREE.format(fixed=fixed)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "1"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_big_block_freed_no_longer_raises_the_thresholds_once_fixed():
    assert not _body_mapped(fixed=False)  # glibc's default: the threshold slid up to 8 MB
    assert _body_mapped(fixed=True)
