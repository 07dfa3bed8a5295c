"""The database gate: `up` starts its children before the database is ready; each waits here before its first query.

The API, the Celery worker and the host agent spend seconds importing before they need the database,
so ``up`` starts them while the database is prepared rather than after, hands each the read end of a pipe
(its number in ``NEURONDOCK_DATABASE_GATE_FD``, for that one start: process plumbing, not a setting)
and writes one byte to it once the database is at head. A child blocks in ``wait`` before it touches
the database; if the supervisor closes the pipe without writing (the migrations failed, or it is
stopping) the child exits. A child restarted later, or one started on its own, has no gate and goes
straight on. See docs/supervision.md, "Start-up".

The API prepares the database itself, in a fork (``prepare_in_fork``) taken as soon as it has
imported SQLAlchemy and the models, which a migrations interpreter of its own would import again on
the same cores the launch waits for; the fork prepares while the API imports the rest. ``up`` hands
the API the write end of a second pipe (``NEURONDOCK_DATABASE_PREPARE_FD``) and reads the fork's word
there (``prepared``) before it opens the other children's gates.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable

ENV = "NEURONDOCK_DATABASE_GATE_FD"
PREPARE_ENV = "NEURONDOCK_DATABASE_PREPARE_FD"
_OPEN = b"1"


class Gates:
    """The supervisor's side: one pipe per gated child, opened (or closed) all at once."""

    def __init__(self) -> None:
        self._writers: list[int] = []

    def reader(self) -> int:
        """A new pipe's read end, for one child to inherit; the caller closes its own copy once it started."""
        read, write = os.pipe()
        self._writers.append(write)
        return read

    def open(self) -> None:
        """Let every gated child go on: the database is ready."""
        self._finish(_OPEN)

    def close(self) -> None:
        """Tell every gated child still waiting to exit: the database will not be ready."""
        self._finish(b"")

    def _finish(self, message: bytes) -> None:
        writers, self._writers = self._writers, []
        for fd in writers:
            # A child that already exited left a pipe with no reader: nothing to tell it.
            with contextlib.suppress(BrokenPipeError):
                if message:
                    os.write(fd, message)
            os.close(fd)


def take(name: str = ENV) -> int | None:
    """This process's gate (or its pipe to prepare on), if ``up`` handed it one (the variable is then removed)."""
    raw = os.environ.pop(name, "")
    return int(raw) if raw.isdigit() else None


def wait(fd: int | None) -> None:
    """Return once the supervisor opened this process's gate (at once when it has none); else exit."""
    if fd is None:
        return
    try:
        message = os.read(fd, 1)
    finally:
        os.close(fd)
    if message != _OPEN:
        print("neurondock: the database was not prepared; not starting", file=sys.stderr, flush=True)
        raise SystemExit(1)


def prepare_in_fork(fd: int, prepare: Callable[[], None]) -> int:
    """Start ``prepare`` in a fork of this process, which tells the supervisor on ``fd``; return its pid.

    The fork shares this process's imports and leaves with whatever preparing imported or built
    (Alembic, for an older database). Call it while this process runs one thread; ``joined`` waits
    for the fork.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            prepare()
            os.write(fd, _OPEN)
            code = 0
        except BaseException:
            with contextlib.suppress(OSError):
                os.write(fd, traceback.format_exc().encode("utf-8", "replace"))
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os._exit(code)
    os.close(fd)  # the fork holds its own copy: the supervisor reads EOF once it is done
    return pid


def joined(pid: int) -> None:
    """Wait for the preparing fork ``prepare_in_fork`` started; exit if it failed."""
    _pid, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        print("neurondock: could not prepare the database; not starting", file=sys.stderr, flush=True)
        raise SystemExit(1)


def prepared(fd: int) -> str | None:
    """Wait for the preparing child's word on ``fd`` (then closed): None when the database is ready, else why not."""
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    message = b"".join(chunks)
    if message == _OPEN:
        return None
    return message.decode("utf-8", "replace").strip() or "the API exited before it prepared the database"
