"""Task names and after-commit enqueueing; the platform sends tasks by name, never imports workers.

A service queues a task on its session (``enqueue_after_commit``); ``install`` puts the hooks that
send or drop the queue on the session factory the app builds, so only that factory's sessions send.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

RECONCILE_ENDPOINT = "neurondock.reconcile_endpoint"
COMPILE_MODEL = "neurondock.compile_model"
ASYNC_INFERENCE = "neurondock.async_inference"

_PENDING = "neurondock_pending_tasks"
DISPATCHER_KEY = "neurondock_dispatcher"
# A send that fails after its change committed is tried again for about five minutes: 0.5 s, doubling to 30 s.
RESEND_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, *(30.0,) * 8)

log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    """Something that sends a named task with arguments (Celery's ``send_task`` in production)."""

    def send(self, task_name: str, *args: Any) -> None: ...


# Celery's defaults for a publish (task_publish_retry_policy) and for a task message's delivery.
PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0, "interval_max": 1, "interval_step": 0.2}
PERSISTENT = 2


def task_message(task_name: str, args: tuple[Any, ...], origin: str) -> tuple[str, dict[str, Any], list[Any]]:
    """(task id, headers, body) of Celery's task message, protocol 2, as ``Celery.send_task`` builds it."""
    task_id = str(uuid.uuid4())
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task_name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(list(args))[:1024],
        "kwargsrepr": "{}",
        "origin": origin,
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    return task_id, headers, [list(args), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


class CeleryDispatcher:
    """Send Celery tasks by name: Celery's task messages, published with kombu alone.

    The messages ``Celery.send_task`` publishes with the platform's settings (broker.celery_config):
    the same headers, body and properties, to the queue's name on the default exchange, through a pool
    of producers with Celery's publish retries. A Celery app only to send kept ~5 MB RSS in every API
    process (docs/measured.md); the workers consume with Celery.
    """

    def __init__(self, broker_url: str, queue: str = "neurondock") -> None:
        from kombu import Connection, Exchange, Queue
        from kombu.pools import producers

        from neurondock_platform.broker import resolve_broker_url, transport_options

        self.broker_url = broker_url
        self.connection = Connection(resolve_broker_url(broker_url), transport_options=transport_options(broker_url))
        self.queue = Queue(queue, Exchange(queue, type="direct"), routing_key=queue)
        self._producers = producers[self.connection]

    def send(self, task_name: str, *args: Any) -> None:
        from neurondock_platform.broker import ring

        task_id, headers, body = task_message(task_name, args, f"gen{os.getpid()}@{socket.gethostname()}")
        with self._producers.acquire(block=True) as producer:
            producer.publish(
                body,
                exchange="",
                routing_key=self.queue.name,
                declare=[self.queue],
                serializer="json",
                delivery_mode=PERSISTENT,
                retry=True,
                retry_policy=PUBLISH_RETRY_POLICY,
                headers=headers,
                correlation_id=task_id,
                reply_to="",
            )
        ring(self.broker_url)  # an embedded broker's worker looks at once instead of polling


class RecordingDispatcher:
    """Keep sent tasks in a list; tests use it to see what would run."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def send(self, task_name: str, *args: Any) -> None:
        self.sent.append((task_name, args))


def enqueue_after_commit(session: Session, task_name: str, *args: Any) -> None:
    """Send a task once the session's transaction commits; drop it if it rolls back."""
    session.info.setdefault(_PENDING, []).append((task_name, args))


def install(session_factory: sessionmaker[Session], dispatcher: Dispatcher) -> None:
    """Send the tasks queued in the factory's sessions through ``dispatcher`` once their transaction commits."""
    info = session_factory.kw.setdefault("info", {})
    first = DISPATCHER_KEY not in info
    info[DISPATCHER_KEY] = dispatcher
    # Not event.contains(): SQLAlchemy keys its listeners by id(target), and a new factory can take the
    # id of a dropped one whose entry is not collected yet, so contains() says yes for a factory that has
    # no listener and its commits would send nothing. The factory's own info says whether this ran.
    if first:
        event.listen(session_factory, "after_commit", _after_commit)
        event.listen(session_factory, "after_soft_rollback", _after_rollback)


def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING, [])
    dispatcher: Dispatcher | None = session.info.get(DISPATCHER_KEY)
    if dispatcher is None:
        return
    for task_name, args in pending:
        try:
            dispatcher.send(task_name, *args)
        except Exception:
            # The change is committed. Failing the request now would make a retrying client (boto3
            # retries a 500) meet "already exists" while the task was never queued; the request
            # succeeds and the task goes out from a background thread instead.
            log.exception("could not send %s%s after commit; trying again in the background", task_name, args)
            resend_later(dispatcher, task_name, args)


def resend_later(
    dispatcher: Dispatcher,
    task_name: str,
    args: tuple[Any, ...],
    delays: tuple[float, ...] = RESEND_DELAYS,
    sleep: Callable[[float], None] = time.sleep,
) -> threading.Thread:
    """Send a task from a daemon thread, waiting ``delays`` between attempts; log if every attempt fails."""

    def attempt() -> None:
        for delay in delays:
            sleep(delay)
            try:
                dispatcher.send(task_name, *args)
            except Exception as exc:
                log.warning("sending %s%s failed again: %s", task_name, args, exc)
            else:
                log.warning("sent %s%s on a later attempt", task_name, args)
                return
        # A worker that starts re-sends the work of every unfinished resource (workers/tasks.py).
        log.error("gave up sending %s%s; the next worker start picks it up", task_name, args)

    thread = threading.Thread(target=attempt, name=f"neurondock-resend-{task_name}", daemon=True)
    thread.start()
    return thread


def _after_rollback(session: Session, previous_transaction: Any) -> None:
    session.info.pop(_PENDING, None)
