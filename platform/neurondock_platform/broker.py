"""Celery broker settings shared by the platform (which sends) and the workers (which consume)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as _SQLAlchemyChannel
from kombu.transport.sqlalchemy import Transport as _SQLAlchemyTransport
from kombu.transport.virtual import QoS as _QoS
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from neurondock_platform import wakeup

EMBEDDED_ALIAS = "ndsqla"
DRAIN_SLICE = 0.25
# How often an idle worker looks at the embedded broker when no sender rang its bell: a backstop only.
# Every sender of a platform rings (the dispatcher after it publishes, the worker's own sends through
# Celery's ``after_task_publish``, retries included) and a worker looks once when it starts, so this
# look finds a task only when something outside neurondock queued one without ringing.
IDLE_POLL = 30.0
_SQLITE_RE = re.compile(r"^(?:[a-z]+\+)?sqlite:///(?P<path>.+)$")


def bells(url: str) -> Path | None:
    """The doorbell directory of an embedded (SQLite) broker, None for any other broker."""
    match = _SQLITE_RE.match(url)
    return Path(match["path"] + ".bells") if match else None


def ring(url: str) -> None:
    """Wake the workers consuming an embedded broker after a task was sent to it."""
    directory = bells(url)
    if directory is not None:
        wakeup.ring(directory)


def _wal(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class _SlotFreeingQoS(_QoS):
    """kombu's prefetch window; a slot freed makes the transport look at the queue again at once.

    While the window is full kombu's look finds nothing it may take, even after a sender rang, so the
    transport waits for the next ring or the idle backstop: without this, a task queued behind a full
    window waited up to ``IDLE_POLL`` after a slot freed.
    """

    def ack(self, delivery_tag: Any) -> None:
        super().ack(delivery_tag)
        self.channel.connection.look_again()

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().reject(delivery_tag, requeue=requeue)
        self.channel.connection.look_again()


class EmbeddedChannel(_SQLAlchemyChannel):
    """kombu's channel on a broker file in WAL mode, as the platform's own SQLite database is (db.py).

    In SQLite's default rollback journal every published task is a commit with several fsyncs: about
    25 ms here, which was half of an InvokeEndpointAsync acknowledgement (docs/async.md).
    """

    QoS = _SlotFreeingQoS

    def _engine_from_config(self) -> Any:
        engine = super()._engine_from_config()
        event.listen(engine, "connect", _wal)
        return engine

    def _declarative_cls(self, name: str, base: Any, ns: dict[str, Any]) -> Any:
        # kombu's tables carry a MySQL table option, and SQLAlchemy checks such an option by importing its
        # whole MySQL dialect, which a process then keeps (~1 MB, docs/measured.md). This broker is SQLite.
        args = base.__table_args__
        options = args if isinstance(args, dict) else args[-1]
        options = {key: value for key, value in options.items() if not key.startswith("mysql_")}
        table_args = options if isinstance(args, dict) else (*args[:-1], options)
        return super()._declarative_cls(name, base, {**ns, "__table_args__": table_args})

    def _get_or_create(self, queue: str) -> Any:
        try:
            return super()._get_or_create(queue)
        except IntegrityError:
            # Another process (the API's first send, a worker declaring its queue) inserted the queue
            # row between kombu's look and its insert; kombu only expects that within one process.
            self.session.rollback()
            return super()._get_or_create(queue)


class EmbeddedTransport(_SQLAlchemyTransport):
    """kombu's SQLAlchemy transport, looked at when a sender rings instead of polled every second.

    kombu polls an SQL queue every ``polling_interval`` (1 s); 50 ms made CreateEndpoint → InService
    fast but cost an idle worker ~4% of a core. A sender rings the broker's doorbell after it sends
    (``dispatch.CeleryDispatcher``), so the worker looks at once, and polls only every ``IDLE_POLL``
    when nobody rang (a task sent by a client that does not ring still runs, up to 30 s later).
    """

    polling_interval = 0.05
    Channel = EmbeddedChannel
    _bell: wakeup.Doorbell | None = None
    _look_now = True
    _next_poll = 0.0

    def rings(self, connection: Any) -> bool:
        """Whether this connection's drains wait on a doorbell (a broker file), so may be asked to wait untimed."""
        return bells(str(connection.client.hostname or "")) is not None

    def look_again(self) -> None:
        """End the drain's wait now and look at the queue (a prefetch slot freed, on any thread)."""
        if self._bell is not None:
            self._bell.ring()

    def drain_events(self, connection: Any, timeout: Any = None) -> Any:  # type: ignore[override]  # kombu: two bases disagree
        """Deliver one message, or return when the timeout passes or the process is shutting down.

        Celery's blocking loop asks for 2 s and looks for a shutdown request only between calls. With a
        doorbell the wait lasts the whole timeout and a shutdown signal ends it (``interrupt_drains``);
        without one it is cut to ``DRAIN_SLICE``, which kept a SIGTERMed worker alive for seconds.
        With a doorbell and no timeout (the worker's loop, ``neurondock_workers.drains``) it returns
        after each look that delivered nothing, so the loop runs between calls once per ring or idle
        look instead of every 2 s.
        """
        if self._bell is None:
            directory = bells(str(connection.client.hostname or ""))
            if directory is None:
                return super().drain_events(connection, timeout=None if timeout is None else min(timeout, DRAIN_SLICE))
            self._bell = wakeup.Doorbell(directory)
            _draining.add(self._bell)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if _shutting_down.is_set():
                raise TimeoutError()  # Celery's loop sees its shutdown flag between calls
            now = time.monotonic()
            if self._look_now or now >= self._next_poll:
                try:
                    self.cycle.get(self._deliver, timeout=timeout)  # type: ignore[attr-defined]  # kombu: cycle is None until a channel opens
                except Empty:
                    self._look_now, self._next_poll = False, now + IDLE_POLL
                    if timeout is None:
                        raise TimeoutError() from None  # a ring or an idle look: the caller's loop turns once
                else:
                    self._look_now = True  # more may be queued behind it
                    return None
            wait = self._next_poll - time.monotonic()
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError()
                wait = min(wait, remaining)
            if self._bell.wait(wait):
                self._look_now = True


_draining: set[wakeup.Doorbell] = set()
_shutting_down = threading.Event()


def interrupt_drains() -> None:
    """End every embedded-broker wait of this process now; a worker's shutdown signal handler calls it."""
    _shutting_down.set()
    for bell in list(_draining):
        bell.ring()


def register() -> None:
    """Make the embedded transport resolvable by kombu in this process."""
    TRANSPORT_ALIASES.setdefault(EMBEDDED_ALIAS, f"{__name__}:EmbeddedTransport")


def resolve_broker_url(url: str) -> str:
    """Map the documented ``sqla+sqlite://`` URL onto the faster embedded transport."""
    register()
    if url.startswith("sqla+sqlite"):
        return EMBEDDED_ALIAS + url[len("sqla") :]
    return url


def transport_options(url: str) -> dict[str, Any]:
    """Transport options: Redis must keep a task invisible longer than the longest compile."""
    if url.startswith(("redis://", "rediss://")):
        return {"visibility_timeout": 4 * 3600}
    return {}


def celery_config(broker_url: str, queue: str = "neurondock") -> dict[str, Any]:
    """Celery settings common to every neurondock process."""
    return {
        "broker_url": resolve_broker_url(broker_url),
        "task_default_queue": queue,
        "broker_transport_options": transport_options(broker_url),
        "broker_connection_retry_on_startup": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": False,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
    }
