"""Doorbells: one process wakes another on the same host at once, so neither has to poll quickly.

A listener binds a Unix datagram socket in a directory; ``ring`` sends one byte to every socket
there. A ring to nobody is a no-op, a ring to a listener that already has one pending is too, and a
socket whose process died is removed by the next ring. Listeners still poll, but slowly: a bell
only ever makes them look sooner (docs/supervision.md, "Waking instead of polling").

The platform rings four of them: the embedded broker's when a task is sent (the Celery worker
stops polling SQLite 20 times a second), ``agents`` when replica rows change (the host agent stops
stepping 10 times a second), ``routes`` when replica, endpoint or variant rows change (the API
reloads its routing table) and ``monitor`` when alarms, scheduled actions, scaling activities, async
requests or endpoints change (the worker's monitor looks at what became due, and writes a new async
endpoint's backlog gauge from its first period).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

AGENTS = "agents"
ROUTES = "routes"
MONITOR = "monitor"
# Which rows each topic's listeners act on: a commit that changed one of them rings the topic.
_WATCHED = {
    AGENTS: ("Replica",),
    ROUTES: ("Replica", "Endpoint", "EndpointVariant"),
    MONITOR: ("MetricAlarm", "ScheduledAction", "ScalingActivity", "AsyncInference", "Endpoint"),
}
_RING_KEY = "neurondock_wake_bells"
_PENDING = "neurondock_wake_pending"
_counter = iter(range(1 << 62))


def bells_dir(data_dir: Path, topic: str) -> Path:
    """Where the listeners of ``topic`` of the platform in ``data_dir`` bind."""
    return data_dir / "bells" / topic


class Doorbell:
    """One listener: ``wait`` returns early (True) when someone rang since the last wait."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # Socket paths are limited to ~107 bytes: a short name keeps deep data dirs working.
        self.path = directory / f"{os.getpid()}-{next(_counter)}"
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.setblocking(False)

    def fileno(self) -> int:
        """The socket, readable while a ring is pending (for an event loop's ``add_reader``)."""
        return self._sock.fileno()

    def drain(self) -> None:
        """Consume every pending ring."""
        with contextlib.suppress(BlockingIOError):
            while self._sock.recv(64):
                pass

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when rung (every pending ring is consumed)."""
        readable, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        if not readable:
            return False
        self.drain()
        return True

    def ring(self) -> None:
        """Ring this bell from this process (a signal handler's way to cut a wait short)."""
        with contextlib.suppress(OSError):
            self._sock.sendto(b"!", str(self.path))

    def close(self) -> None:
        """Stop listening and remove the socket."""
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


_sender: socket.socket | None = None
_sender_lock = threading.Lock()


def ring(directory: Path) -> None:
    """Wake every listener in ``directory``; never raises, never blocks."""
    global _sender
    try:
        names = os.listdir(directory)
    except OSError:
        return
    with _sender_lock:
        if _sender is None:
            _sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            _sender.setblocking(False)
        for name in names:
            path = directory / name
            try:
                _sender.sendto(b"!", str(path))
            except BlockingIOError:
                pass  # its queue is full: it has rings pending already
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    path.unlink()  # a listener that died without closing
            except OSError:
                pass


def install(session_factory: sessionmaker[Session], data_dir: Path) -> None:
    """Ring each topic after a transaction of the factory's sessions changed the rows it watches."""
    info = session_factory.kw.setdefault("info", {})
    first = _RING_KEY not in info
    info[_RING_KEY] = {topic: bells_dir(data_dir, topic) for topic in _WATCHED}
    # The factory's own info, not event.contains(), says whether this ran (dispatch.install says why).
    if first:
        event.listen(session_factory, "after_flush", _after_flush)
        event.listen(session_factory, "after_commit", _after_commit)
        event.listen(session_factory, "after_soft_rollback", _after_rollback)


def _after_flush(session: Session, context: Any) -> None:
    # ``dirty`` is optimistic (any attribute set); only a real change of a watched row rings.
    touched = (*session.new, *session.deleted, *(o for o in session.dirty if session.is_modified(o)))
    kinds = {type(obj).__name__ for obj in touched}
    topics = {topic for topic, watched in _WATCHED.items() if kinds.intersection(watched)}
    if topics:
        session.info.setdefault(_PENDING, set()).update(topics)


def _after_commit(session: Session) -> None:
    topics = session.info.pop(_PENDING, ())
    bells = session.info.get(_RING_KEY, {})
    for topic in topics:
        if topic in bells:
            ring(bells[topic])


def _after_rollback(session: Session, previous_transaction: Any) -> None:
    session.info.pop(_PENDING, None)
