"""The supervisor once its children run: restart those that exit, stop them all on SIGINT/SIGTERM.

``up`` and ``host`` start their children in ``supervisor.py``, with the command line, the settings,
the database gate and the banner: imports (click, dataclasses, pathlib …) that a process keeps for
good. Then ``hand_over`` replaces that interpreter with this module (execve: the same pid, so the
children, their death signal and the instance lock carry over), which imports only what watching
needs, for the platform's whole life (docs/supervision.md, docs/measured.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from neurondock_platform.lifetime import spawn

RESTART_LIMIT = 5  # restarts of one child within RESTART_WINDOW before the supervisor gives up
RESTART_WINDOW = 60.0
# The longest the supervisor goes without looking at its children: SIGCHLD wakes it when one exits,
# and SIGINT/SIGTERM when it should stop, each through the self-pipe, which keeps a ring sent while
# the loop was not waiting; so this only bounds a wake-up lost some way not foreseen, and an idle
# platform pays for it once a minute, not every 5 s (docs/supervision.md, "Waking instead of polling").
CHILD_CHECK_BACKSTOP = 60.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)
MODULE = "neurondock_platform.watch"


class Child:
    """One supervised child process: how it starts, its pid and its restart history."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: str | os.PathLike[str],
        *,
        root_keys: bool = False,
        env: dict[str, str] | None = None,
        pid: int | None = None,
        restarts: list[float] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = os.fspath(log_path)
        # The API process alone gets the platform's root keys (supervisor.child_env).
        self.root_keys = root_keys
        # The environment it starts with: kept for its restarts.
        self.env = env
        self.pid = pid
        self.returncode: int | None = None
        self.restarts = restarts if restarts is not None else []
        # Held so that subprocess never reaps the child behind ``alive``'s back (it waits by pid itself,
        # which also works for children the interpreter before ``hand_over`` started).
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str], keep_fds: tuple[int, ...] = ()) -> None:
        """Spawn the child with ``env``; it keeps ``keep_fds`` (the instance lock, a database gate)."""
        self.env = env
        with open(self.log_path, "ab") as log:
            # SIGTERM when the supervisor dies, however it dies; its own session so a terminal's Ctrl-C
            # reaches only the supervisor, which then stops the children itself.
            self._popen = spawn(
                self.argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, pass_fds=keep_fds
            )
        self.pid, self.returncode = self._popen.pid, None

    def alive(self) -> bool:
        """Whether it still runs (an exited child is reaped here and its ``returncode`` kept)."""
        if self.pid is None or self.returncode is not None:
            return False
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.returncode = -1  # reaped elsewhere: gone, its status unknown
            return False
        if pid == 0:
            return True
        self.returncode = os.waitstatus_to_exitcode(status)
        return False

    def signal(self, sig: int) -> None:
        """Send ``sig`` to its process group (what it started dies with it), if it still runs."""
        if self.alive():
            assert self.pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for it to exit; whether it did."""
        deadline = time.monotonic() + timeout
        while self.alive():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.02, left))  # a poll interval, as Popen.wait's own
        return True

    def spec(self) -> dict[str, object]:
        """What ``hand_over`` carries across exec."""
        return {
            "name": self.name,
            "argv": self.argv,
            "log_path": self.log_path,
            "root_keys": self.root_keys,
            "env": self.env,
            "pid": self.pid,
            "restarts": self.restarts,
        }


def stop_all(children: list[Child], timeout: float) -> None:
    """SIGTERM every child at once; SIGKILL the process groups of those still running after ``timeout``."""
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        if child.pid is not None and not child.wait(max(0.0, deadline - time.monotonic())):
            print(f"neurondock: {child.name} did not stop within {timeout:.0f} s; killing it", file=sys.stderr)
            child.signal(signal.SIGKILL)
            child.wait(timeout)


class Watch:
    """Restart the children that exit, and stop them all on SIGINT/SIGTERM."""

    def __init__(self, children: list[Child], lock_fd: int | None, stop_timeout: float) -> None:
        self.children = children
        self.lock_fd = lock_fd
        self.stop_timeout = stop_timeout
        self.stopping = False
        # A self-pipe the signal handlers write to: ``run`` sleeps on it instead of polling its children
        # (a threading.Event is not safe to set from a handler that may interrupt its own lock).
        self._bell, self._ring = socket.socketpair()
        self._ring.setblocking(False)

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD:
            self.stopping = True
        with contextlib.suppress(OSError):
            self._ring.send(b"!")  # a full buffer already holds a wake-up

    def install_signals(self) -> None:
        for signum in _SIGNALS:
            signal.signal(signum, self._on_signal)

    def start(self, child: Child) -> None:
        """Restart ``child`` with the environment it started with, keeping the instance lock."""
        assert child.env is not None
        child.start(child.env, (self.lock_fd,) if self.lock_fd is not None else ())

    def run(self) -> int:
        """Watch the children until asked to stop (or one keeps exiting); returns the exit code."""
        code = 0
        while not self.stopping:
            for child in self.children:
                if child.alive():
                    continue
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW] + [now]
                if len(child.restarts) > RESTART_LIMIT:
                    print(f"neurondock: {child.name} keeps exiting; see {child.log_path}", file=sys.stderr)
                    self.stopping, code = True, 1
                    break
                print(f"neurondock: {child.name} exited ({child.returncode}); restarting", file=sys.stderr)
                self.start(child)
            # Until a child exits (SIGCHLD) or a stop is asked; the timeout is only a backstop.
            if select.select([self._bell], [], [], CHILD_CHECK_BACKSTOP)[0]:
                with contextlib.suppress(BlockingIOError):
                    self._bell.recv(4096, socket.MSG_DONTWAIT)
        self.stop()
        return code

    def stop(self) -> None:
        print("neurondock: stopping", file=sys.stderr, flush=True)
        # One budget for all: the children stop in parallel, each bounding its own stop below it.
        stop_all(self.children, max(1.0, self.stop_timeout))
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # children that still hold the descriptor keep it locked
            self.lock_fd = None


def hand_over(children: list[Child], lock_fd: int | None, stop_timeout: float, stopping: Callable[[], bool]) -> None:
    """Replace this interpreter with the watch (``main``): the same pid, children and instance lock.

    Returns only when ``stopping()`` says a stop was asked before the hand-over (the caller stops the
    children itself). The children's environments (the API's holds the root keys) cross in a memfd,
    never on the command line. SIGINT, SIGTERM and SIGCHLD stay blocked from the last look at
    ``stopping`` until the watch handles them: one that comes meanwhile waits, it is not lost.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    if stopping():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        return
    spec = {"children": [c.spec() for c in children], "lock_fd": lock_fd, "stop_timeout": stop_timeout}
    fd = os.memfd_create("neurondock-watch", 0)  # inherited across the exec; the watch closes it
    os.write(fd, json.dumps(spec).encode())
    if lock_fd is not None:
        os.set_inheritable(lock_fd, True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execv(sys.executable, [sys.executable, "-m", MODULE, str(fd)])


def main(argv: list[str]) -> int:
    """The watch, after ``hand_over``: read what it carried, handle the signals, watch."""
    fd = int(argv[0])
    os.lseek(fd, 0, os.SEEK_SET)
    with os.fdopen(fd, "rb") as spec_file:
        spec = json.loads(spec_file.read())
    children = [Child(**c) for c in spec["children"]]
    watch = Watch(children, spec["lock_fd"], float(spec["stop_timeout"]))
    watch.install_signals()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    return watch.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
