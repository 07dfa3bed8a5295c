"""Task names and after-commit enqueueing; the platform sends tasks by name, never imports workers."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session

RECONCILE_ENDPOINT = "neurondock.reconcile_endpoint"
COMPILE_MODEL = "neurondock.compile_model"

_PENDING = "neurondock_pending_tasks"
DISPATCHER_KEY = "neurondock_dispatcher"


class Dispatcher(Protocol):
    """Something that sends a named task with arguments (Celery's ``send_task`` in production)."""

    def send(self, task_name: str, *args: Any) -> None: ...


class CeleryDispatcher:
    """Send tasks by name through a Celery app configured with the broker only."""

    def __init__(self, broker_url: str, queue: str = "neurondock") -> None:
        from celery import Celery

        from neurondock_platform.broker import celery_config

        self.app = Celery("neurondock", set_as_current=False)
        self.app.conf.update(celery_config(broker_url, queue))

    def send(self, task_name: str, *args: Any) -> None:
        self.app.send_task(task_name, args=list(args))


class RecordingDispatcher:
    """Keep sent tasks in a list; tests use it to see what would run."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def send(self, task_name: str, *args: Any) -> None:
        self.sent.append((task_name, args))


def enqueue_after_commit(session: Session, task_name: str, *args: Any) -> None:
    """Send a task once the session's transaction commits; drop it if it rolls back."""
    session.info.setdefault(_PENDING, []).append((task_name, args))


def install(session_factory: Any, dispatcher: Dispatcher) -> None:
    """Wire after-commit sending into every session the factory makes."""
    session_factory.kw.setdefault("info", {})[DISPATCHER_KEY] = dispatcher


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING, [])
    dispatcher: Dispatcher | None = session.info.get(DISPATCHER_KEY)
    if dispatcher is None:
        return
    for task_name, args in pending:
        dispatcher.send(task_name, *args)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction: Any) -> None:
    session.info.pop(_PENDING, None)
