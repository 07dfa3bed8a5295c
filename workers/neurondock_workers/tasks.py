"""Celery tasks: thin adapters that pass ids to platform services. Names are explicit and dotted."""

from __future__ import annotations

import logging
import threading
from functools import cache
from typing import Any

from celery.signals import worker_ready
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform import dispatch
from neurondock_platform.config import Settings
from neurondock_platform.db import make_engine, make_sessionmaker, session_scope
from neurondock_platform.services.compilation_jobs import jobs_needing_work
from neurondock_platform.services.host_health import endpoints_on_lost_hosts
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


def watch_hosts(stop: threading.Event, interval: float = 1.0) -> None:
    """Every ``interval`` seconds, hand endpoints with replicas on lost hosts to the reconciler."""
    settings = _settings()
    while not stop.wait(interval):
        try:
            with session_scope(session_factory()) as session:
                flipped = endpoints_on_lost_hosts(session, settings.heartbeat_timeout)
            for endpoint_id in flipped:
                log.warning("endpoint %s has replicas on a lost host: SystemUpdating", endpoint_id)
                reconcile_endpoint_task.delay(endpoint_id)
        except Exception:
            log.exception("host watch pass failed; trying again")


_watch_stop = threading.Event()


@app.task(
    name=dispatch.COMPILE_MODEL,
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def compile_model_task(job_id: int) -> str:
    """Run (or resume, or confirm finished) one compilation job; safe to deliver twice."""
    # Imported here: the compiler pulls in torch, which reconcile-only workers never need.
    from neurondock_workers.compile_job import RunnerConfig, run_compilation_job
    from neurondock_workers.hosting.s3 import make_s3_client

    settings = _settings()
    outcome = run_compilation_job(
        session_factory(), job_id, make_s3_client(settings), RunnerConfig.from_settings(settings)
    )
    log.info("compilation job %s: %s", job_id, outcome)
    return outcome


@worker_ready.connect
def _recover(sender: Any = None, **kwargs: Any) -> None:
    # The embedded broker cannot redeliver a message whose worker died mid-task, so every
    # endpoint left in a transitional state is reconciled again when a worker starts, and every
    # unfinished compilation job is sent again (the runner resumes, waits for its live owner or
    # finds it finished).
    with session_scope(session_factory()) as session:
        ids = endpoints_needing_reconcile(session)
        job_ids = jobs_needing_work(session)
    for endpoint_id in ids:
        reconcile_endpoint_task.delay(endpoint_id)
    if ids:
        log.info("re-enqueued reconcile for endpoints %s", ids)
    for job_id in job_ids:
        compile_model_task.delay(job_id)
    if job_ids:
        log.info("re-enqueued compilation jobs %s", job_ids)
    threading.Thread(target=watch_hosts, args=(_watch_stop,), name="neurondock-host-watch", daemon=True).start()
