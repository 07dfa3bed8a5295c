"""Process helpers shared by the tests that start and kill real processes."""

from __future__ import annotations

import os


def pid_gone(pid: int) -> bool:
    """Whether a process has exited (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] == "Z"
