"""Process helpers shared by the tests that start and kill real processes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from neurondock_platform.lifetime import pid_alive
from tests.support.waiting import WaitTimeout, wait_for


def pid_gone(pid: int) -> bool:
    """Whether a process has exited (a zombie waiting to be reaped counts as gone)."""
    return not pid_alive(pid)


def open_files(pid: int) -> set[str]:
    """What a process's descriptors point at now (one closed while being read is left out)."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found.add(os.readlink(fd))
    return found


def children_of(pid: int) -> list[int]:
    """Direct children of a process (from /proc/*/stat's ppid field)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def descendants(pid: int) -> dict[int, str]:
    """Every live descendant of a process, pid → command line."""
    tree: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children_of(todo.pop()):
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    tree[child] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            todo.append(child)
    return tree


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until every pid has exited; return those still alive after ``timeout`` seconds."""
    with contextlib.suppress(WaitTimeout):
        wait_for(lambda: all(pid_gone(p) for p in pids), timeout, what="the processes to exit", interval=0.05)
    return [p for p in pids if not pid_gone(p)]


def live_processes() -> Iterator[tuple[Path, bytes, str]]:
    """Every readable process as (its /proc entry, its environment, its command line joined by spaces)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        yield entry, environ, cmdline


def platform_pids(data_dir: Path, needle: str) -> list[int]:
    """The pids of a platform's processes (by NEURONDOCK_DATA_DIR) whose command line contains ``needle``."""
    marker = f"NEURONDOCK_DATA_DIR={data_dir}".encode()
    return [int(entry.name) for entry, environ, cmdline in live_processes() if marker in environ and needle in cmdline]
