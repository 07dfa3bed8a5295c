"""Celery tasks: thin adapters that pass ids to platform services. Names are explicit and dotted."""

from __future__ import annotations

import logging
import signal
import threading
from functools import cache, partial
from pathlib import Path
from typing import Any

from celery.signals import after_task_publish, worker_ready, worker_shutdown
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from neurondock_platform import broker, dispatch, wakeup
from neurondock_platform.config import Settings
from neurondock_platform.dataplane.background import BackgroundInvoker
from neurondock_platform.dataplane.capture import writer_for
from neurondock_platform.dataplane.metrics import MetricsCollector, MetricsFlusher
from neurondock_platform.db import make_engine, make_sessionmaker, session_scope, utcnow
from neurondock_platform.s3_client import OwnerClients
from neurondock_platform.sagemaker_metrics import aligned_interval
from neurondock_platform.services import async_inference, host_health, leases
from neurondock_platform.services.compilation_jobs import jobs_needing_work
from neurondock_platform.services.reconciler import (
    ReconcileOptions,
    endpoints_needing_reconcile,
    reconcile_endpoint,
)
from neurondock_workers import monitor
from neurondock_workers.celery_app import app

log = logging.getLogger(__name__)

# The least the lost-host watch sleeps between two looks (a look planned for now or the past).
MIN_WATCH_PAUSE = 0.05


def _settings() -> Settings:
    settings: Settings | None = getattr(app.conf, "neurondock_settings", None)
    if settings is None:
        settings = Settings.from_env()
        app.conf.neurondock_settings = settings
    return settings


@cache
def _session_factory(database_url: str, data_dir: str) -> sessionmaker[Session]:
    factory = make_sessionmaker(make_engine(database_url))
    # Replica rows the reconciler writes wake this host's agent and the API's routing table at once.
    wakeup.install(factory, Path(data_dir))
    return factory


def session_factory() -> sessionmaker[Session]:
    """The worker process's session factory (one engine per process)."""
    settings = _settings()
    return _session_factory(settings.database_url, str(settings.data_dir))


@cache
def _owner_clients() -> OwnerClients:
    # S3 clients acting as a job's owner (never the platform's keys), kept across tasks.
    settings = _settings()
    return OwnerClients(settings, session_factory(), session_name=f"neurondock-compile-{settings.host_id}")


@cache
def _async_factory() -> sessionmaker[Session]:
    # Finishing a request sends the next parked one after commit: this factory's sessions dispatch.
    settings = _settings()
    factory = make_sessionmaker(make_engine(settings.database_url))
    dispatch.install(factory, dispatch.CeleryDispatcher(settings.broker_url, settings.queue))
    wakeup.install(factory, settings.data_dir)
    return factory


@cache
def _async_clients() -> OwnerClients:
    # S3 clients acting as the endpoint's owner: inputs read, results written with its credentials.
    settings = _settings()
    return OwnerClients(settings, session_factory(), session_name=f"neurondock-async-{settings.host_id}")


@cache
def _invoker() -> BackgroundInvoker:
    # Async invocations are captured like real-time ones; the counts go to the metric store from here.
    settings, factory = _settings(), session_factory()
    metrics = MetricsCollector(resolution=settings.metrics_flush_seconds)
    flusher = MetricsFlusher(metrics, factory, interval=settings.metrics_flush_seconds)
    return BackgroundInvoker(factory, capture=writer_for(settings, factory, metrics), capture_metrics=flusher)


@app.task(
    name=dispatch.ASYNC_INFERENCE,
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def async_inference_task(row_id: int) -> str:
    """Run (or expire, or leave to its live owner, or park) one async inference; safe to deliver twice."""
    from neurondock_workers.async_job import AsyncConfig, run_async_inference

    settings = _settings()
    config = AsyncConfig(region=settings.region, metrics_period=aligned_interval(settings.metrics_flush_seconds))
    outcome = run_async_inference(_async_factory(), row_id, _async_clients(), _invoker(), config)
    log.info("async inference %s: %s", row_id, outcome.state)
    return outcome.state


@app.task(name=dispatch.RECONCILE_ENDPOINT, acks_late=True, ignore_result=True)
def reconcile_endpoint_task(endpoint_id: int) -> str:
    """Converge one endpoint to its desired state."""
    settings = _settings()
    outcome = reconcile_endpoint(
        session_factory(), endpoint_id, ReconcileOptions(heartbeat_timeout=settings.heartbeat_timeout)
    )
    log.info("reconcile endpoint %s: %s", endpoint_id, outcome)
    return outcome


def watch_hosts(stop: threading.Event) -> None:
    """Look for lost hosts when one may have turned lost, and hand their endpoints to the reconciler.

    Each look plans the next (``host_health.HostWatch``): idle, about twice per heartbeat timeout.
    """
    settings = _settings()
    state = host_health.HostWatch(settings.heartbeat_timeout, leases.holder_name())
    pause = 0.0
    while not stop.wait(pause):
        try:
            with session_scope(session_factory()) as session:
                done = state.look(session)
            for endpoint_id in done.flipped or []:
                log.warning("endpoint %s has replicas on a lost host: SystemUpdating", endpoint_id)
                reconcile_endpoint_task.delay(endpoint_id)
            pause = max(MIN_WATCH_PAUSE, (done.next_look - utcnow()).total_seconds())
        except Exception:
            log.exception("host watch pass failed; trying again")
            pause = host_health.retry_seconds(settings.heartbeat_timeout)


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

    settings = _settings()
    outcome = run_compilation_job(session_factory(), job_id, _owner_clients(), RunnerConfig.from_settings(settings))
    log.info("compilation job %s: %s", job_id, outcome)
    return outcome


@after_task_publish.connect
def _ring_broker(sender: Any = None, **kwargs: Any) -> None:
    # A task this worker sends itself (a retry, a reconcile after a lost host) runs at once too.
    broker.ring(_settings().broker_url)


@worker_ready.connect
def _wake_drains_on_shutdown(sender: Any = None, **kwargs: Any) -> None:
    # The embedded broker's drain waits on its doorbell for all of Celery's 2 s, so a shutdown signal
    # rings the doorbell first (broker.interrupt_drains); Celery's own handler then runs as before.
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        previous = signal.getsignal(signum)
        if callable(previous):
            signal.signal(signum, partial(_interrupt_drains_then, previous))


def _interrupt_drains_then(previous: Any, signum: int, frame: Any) -> None:
    broker.interrupt_drains()
    previous(signum, frame)


@worker_ready.connect
def _recover(sender: Any = None, **kwargs: Any) -> None:
    # The embedded broker cannot redeliver a message whose worker died mid-task, so every
    # endpoint left in a transitional state is reconciled again when a worker starts, and every
    # unfinished compilation job is sent again (the runner resumes, waits for its live owner or
    # finds it finished).
    with session_scope(session_factory()) as session:
        ids = endpoints_needing_reconcile(session)
        job_ids = jobs_needing_work(session)
        async_ids = async_inference.open_requests(session)
    for endpoint_id in ids:
        reconcile_endpoint_task.delay(endpoint_id)
    if ids:
        log.info("re-enqueued reconcile for endpoints %s", ids)
    for job_id in job_ids:
        compile_model_task.delay(job_id)
    if job_ids:
        log.info("re-enqueued compilation jobs %s", job_ids)
    for row_id in async_ids:
        async_inference_task.delay(row_id)
    if async_ids:
        log.info("re-enqueued async inferences %s", async_ids)
    threading.Thread(target=watch_hosts, args=(_watch_stop,), name="neurondock-host-watch", daemon=True).start()
    monitor.start(_settings(), _watch_stop)


@worker_shutdown.connect
def _stop_watchers(sender: Any = None, **kwargs: Any) -> None:
    # The monitor gives its lease up, so another worker takes over without waiting for it to expire.
    _watch_stop.set()
    monitor.wake()
    if _invoker.cache_info().currsize:
        # The last captured async invocations are written, and counted, before the worker goes.
        try:
            _invoker().close()
        except Exception:
            log.exception("could not close the async invoker")
