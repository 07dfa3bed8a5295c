"""The database gate: `up` starts its children while it migrates; each waits here before its first query.

The API, the Celery worker and the host agent spend seconds importing before they need the database,
so ``up`` starts them beside the migrations rather than after them, hands each the read end of a pipe
(its number in ``NEURONDOCK_DATABASE_GATE_FD``, for that one start: process plumbing, not a setting)
and writes one byte to it once the database is at head. A child blocks in ``wait`` before it touches
the database; if the supervisor closes the pipe without writing (the migrations failed, or it is
stopping) the child exits. A child restarted later, or one started on its own, has no gate and goes
straight on. See docs/supervision.md, "Start-up".
"""

from __future__ import annotations

import contextlib
import os
import sys

ENV = "NEURONDOCK_DATABASE_GATE_FD"
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


def take() -> int | None:
    """This process's gate, if ``up`` handed it one (the variable is removed: no grandchild inherits it)."""
    raw = os.environ.pop(ENV, "")
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
