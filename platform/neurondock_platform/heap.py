"""The C heap (glibc's malloc) of a long-lived platform process: fewer arenas, free pages handed back.

Nothing here does anything where libc has no such call (another C library): each is a saving, never
something a caller relies on.
"""

from __future__ import annotations

import ctypes
from typing import Any

# mallopt's parameter for the most arenas malloc may keep (glibc's malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8


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


def trim() -> None:
    """Hand the C heap's free pages back to the kernel (glibc's ``malloc_trim``).

    For after a bulk of parsed data was dropped: without it the pages its dicts took stay resident
    (measured in the API: ~3 MB of the ~4.5 MB a pruned SageMaker model frees, docs/measured.md).
    """
    malloc_trim = _libc_call("malloc_trim")
    if malloc_trim is not None:
        malloc_trim(0)
