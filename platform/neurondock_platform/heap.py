"""The C heap (glibc's malloc) of a long-lived platform process: fewer arenas, free pages handed back.

Nothing here does anything where libc has no such call (another C library): each is a saving, never
something a caller relies on.
"""

from __future__ import annotations

import ctypes
from typing import Any

# mallopt's parameters (glibc's malloc.h): the most arenas malloc may keep, the free space at the heap's
# top above which free() gives it back, and the size from which a block is mapped on its own.
_M_ARENA_MAX = -8
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's own starting values, kept from then on (mallopt fixes them: no sliding).
TRIM_THRESHOLD = MMAP_THRESHOLD = 128 * 1024


def _libc_call(name: str) -> Any:
    # The symbols this interpreter already has, libc's among them (no ctypes.util.find_library).
    return getattr(ctypes.CDLL(None), name, None)


def limit_arenas(count: int = 2) -> None:
    """Let glibc's malloc keep at most ``count`` arenas in this process; call it before any thread starts.

    glibc gives threads that allocate at once arenas of their own, up to eight per core, each with its
    own free pages. The API (its loop and WSGI threads) and the host process (Celery's threads and the
    agent's) allocate almost only under the GIL, so the arenas bought them no speed, only resident
    pages: 3-5 MB in each (docs/measured.md). mallopt holds for this process only: the replicas a host
    process starts keep glibc's default.
    """
    mallopt = _libc_call("mallopt")
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, count)


def fix_thresholds() -> None:
    """Keep glibc's starting trim and mmap thresholds (128 KiB) for good, instead of letting them slide up.

    By default, freeing a block malloc had mapped on its own raises the mmap threshold to that block's
    size and the trim threshold to twice it, and the heap then keeps up to that much free at its top.
    Fixed, big blocks go back to the kernel when freed and so does the heap's free top. For the host
    process, which handles no request bodies. Not for the API: there each block of 128 KiB or more (a
    602 KB ResNet-18 body and its copies) would be mapped and faulted in anew on every request, which
    measured ~680 page faults and about twice the API's CPU per such request (docs/measured.md, "The
    API's malloc thresholds left to slide").
    """
    mallopt = _libc_call("mallopt")
    if mallopt is not None:
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def trim() -> None:
    """Hand the C heap's free pages back to the kernel (glibc's ``malloc_trim``).

    For after a bulk of parsed data was dropped: without it the pages its dicts took stay resident
    (measured in the API: ~3 MB of the ~4.5 MB a pruned SageMaker model frees, docs/measured.md).
    """
    malloc_trim = _libc_call("malloc_trim")
    if malloc_trim is not None:
        malloc_trim(0)
