"""Child processes that die with their parent, even when the parent is SIGKILLed.

Linux delivers a child's parent-death signal (``PR_SET_PDEATHSIG``) when the *thread* that forked
it exits, not the process (prctl(2)). The host agent starts replicas from short-lived threads, so
every such start goes through one spawner thread that lives as long as the process: then "the
parent died" means the process died. The main thread lives as long as the process too, so it
forks directly. See docs/supervision.md.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

# Not imported from typing: the watch imports this module and nothing else that needs typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from concurrent.futures import Future
    from typing import Any

PR_SET_PDEATHSIG = 1

_libc: Any = None


def pid_alive(pid: int) -> bool:
    """Return whether a process exists and has not exited (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited already; only its parent's wait() is missing.
    try:
        # open(), not pathlib: the supervisor's watch imports this module and nothing it can do without.
        with open(f"/proc/{pid}/stat") as stat_file:
            stat = stat_file.read()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def wait_gone(pid: int, timeout: float, poll: float = 0.01) -> bool:
    """Wait until ``pid`` has exited, at most ``timeout`` seconds; return whether it has."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def _prctl() -> Any:
    global _libc
    if _libc is None:
        # The symbols this interpreter already has, libc's among them: ctypes.util.find_library would run
        # ldconfig and import tempfile and shutil into a supervisor that lives as long as the platform.
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.prctl


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """Return a ``preexec_fn`` that has the child sent ``sig`` when its parent dies."""
    prctl = _prctl()  # resolved before the fork: the child only calls it
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            # The parent died between fork and prctl: no signal will ever come, so act on it now.
            os.kill(os.getpid(), sig)

    return arm


class _Spawner:
    """One daemon thread, started on first use, that forks every child it is handed."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        # Here, not at the top: concurrent.futures brings logging, which `up`'s supervisor (it only
        # spawns from its main thread) would keep for its whole life.
        from concurrent.futures import Future

        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="neurondock-spawner", daemon=True)
                self._thread.start()
        done: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((start, done))
        return done.result()

    def _loop(self) -> None:
        while True:
            start, done = self._requests.get()
            try:
                done.set_result(start())
            except BaseException as exc:
                done.set_exception(exc)


_spawner = _Spawner()


def spawn(argv: Sequence[str], *, death_signal: int = signal.SIGTERM, **popen: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, **popen)`` for a child that gets ``death_signal`` when this process dies."""
    if "preexec_fn" in popen:
        raise TypeError("spawn() sets preexec_fn itself")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(list(argv), preexec_fn=die_with_parent(death_signal), **popen)

    if threading.current_thread() is threading.main_thread():
        return start()
    return _spawner.run(start)
