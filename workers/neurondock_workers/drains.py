"""Celery's worker loop on the embedded broker, turning once per doorbell ring instead of every 2 s.

Celery's blocking loop (``celery.worker.loops.synloop``, the one a transport without an event loop
gets) asks the broker for at most 2 s at a time, only to look at its shutdown flag between calls:
an idle worker woke every 2 s. The embedded broker's drain waits on its doorbell, which a shutdown
signal rings (``broker.interrupt_drains``), so this loop asks it to wait untimed: it returns after
each ring or idle look (docs/supervision.md, "Waking instead of polling").
"""

from __future__ import annotations

from typing import Any

from celery.worker import loops
from celery.worker.consumer import Consumer

from neurondock_platform.broker import EmbeddedTransport


class _Untimed:
    """A kombu connection whose drains ignore the caller's timeout."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def drain_events(self, timeout: float | None = None, **kwargs: Any) -> Any:
        """Drain until a ring or an idle look, whatever timeout Celery's loop asks for."""
        return self._connection.drain_events(timeout=None, **kwargs)


def synloop(obj: Any, connection: Any, *args: Any, **kwargs: Any) -> Any:
    """Celery's blocking loop, with untimed drains when the broker is a file with a doorbell."""
    transport = connection.transport
    if isinstance(transport, EmbeddedTransport) and transport.rings(connection.connection):
        connection = _Untimed(connection)
    return loops.synloop(obj, connection, *args, **kwargs)


class QuietConsumer(Consumer):
    """Celery's consumer, running ``synloop`` above where it would run Celery's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if getattr(self, "loop", None) is loops.synloop:
            self.loop = synloop
