"""Celery tasks: thin adapters that pass ids to platform services. Names are explicit and dotted."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from celery.signals import worker_ready
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform import dispatch
from neurondock_platform.config import Settings
from neurondock_platform.db import make_engine, make_sessionmaker, session_scope
from neurondock_platform.services.reconciler import (
    ReconcileOptions,
    endpoints_needing_reconcile,
    reconcile_endpoint,
)
from neurondock_workers.celery_app import app

log = logging.getLogger(__name__)


def _settings() -> Settings:
    settings: Settings | None = getattr(app.conf, "neurondock_settings", None)
    if settings is None:
        settings = Settings.from_env()
        app.conf.neurondock_settings = settings
    return settings


@cache
def _session_factory(database_url: str) -> sessionmaker[Session]:
    return make_sessionmaker(make_engine(database_url))


def session_factory() -> sessionmaker[Session]:
    """The worker process's session factory (one engine per process)."""
    return _session_factory(_settings().database_url)


@app.task(name=dispatch.RECONCILE_ENDPOINT, acks_late=True, ignore_result=True)
def reconcile_endpoint_task(endpoint_id: int) -> str:
    """Converge one endpoint to its desired state."""
    settings = _settings()
    outcome = reconcile_endpoint(
        session_factory(), endpoint_id, ReconcileOptions(heartbeat_timeout=settings.heartbeat_timeout)
    )
    log.info("reconcile endpoint %s: %s", endpoint_id, outcome)
    return outcome


@worker_ready.connect
def _recover(sender: Any = None, **kwargs: Any) -> None:
    # The embedded broker cannot redeliver a message whose worker died mid-task, so every
    # endpoint left in a transitional state is reconciled again when a worker starts.
    with session_scope(session_factory()) as session:
        ids = endpoints_needing_reconcile(session)
    for endpoint_id in ids:
        reconcile_endpoint_task.delay(endpoint_id)
    if ids:
        log.info("re-enqueued reconcile for endpoints %s", ids)
