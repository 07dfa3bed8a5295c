"""The ``neurondock.compile_model`` Celery task adapter and the worker_ready recovery of unfinished jobs."""

from __future__ import annotations

import pytest
from tests.integration.compilation.compilation_helpers import BUCKET, job_request, with_input

from neurondock_platform import dispatch

SQLITE_ONLY = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)


@pytest.fixture
def worker_settings(settings, live_url):
    """Point the worker's Celery app at these settings (the embedded store on the live server)."""
    from neurondock_workers.celery_app import app

    previous = getattr(app.conf, "neurondock_settings", None)
    app.conf.neurondock_settings = settings.with_overrides(public_url=live_url)
    yield app.conf.neurondock_settings
    app.conf.neurondock_settings = previous


def test_the_task_is_named_for_the_platform_and_acks_late():
    from neurondock_workers.tasks import compile_model_task

    assert compile_model_task.name == dispatch.COMPILE_MODEL == "neurondock.compile_model"
    assert compile_model_task.acks_late is True


@SQLITE_ONLY
def test_the_task_runs_the_job_through_the_workers_s3_client(ok, s3, worker_settings, job_id_of):
    from neurondock_workers.tasks import compile_model_task

    ok("CreateCompilationJob", with_input(job_request("via-task"), S3Uri=f"s3://{BUCKET}/absent/model.tar.gz"))
    job_id = job_id_of("via-task")
    assert compile_model_task(job_id) == "FAILED"
    desc = ok("DescribeCompilationJob", {"CompilationJobName": "via-task"})
    assert "Unable to download the model" in desc["FailureReason"]
    assert compile_model_task(job_id) == "done"


@SQLITE_ONLY
def test_worker_ready_resends_every_unfinished_job(ok, session_factory, worker_settings, job_id_of, monkeypatch):
    from sqlalchemy import update

    from neurondock_platform.db import session_scope
    from neurondock_platform.models import CompilationJob
    from neurondock_workers import tasks

    statuses = {"a": "STARTING", "b": "INPROGRESS", "c": "STOPPING", "d": "COMPLETED", "e": "FAILED", "f": "STOPPED"}
    for name, status in statuses.items():
        ok("CreateCompilationJob", job_request(name))
        with session_scope(session_factory) as session:
            session.execute(update(CompilationJob).where(CompilationJob.name == name).values(status=status))
    sent: list[int] = []
    monkeypatch.setattr(tasks.compile_model_task, "delay", sent.append)
    monkeypatch.setattr(tasks.reconcile_endpoint_task, "delay", lambda endpoint_id: None)
    monkeypatch.setattr(tasks, "watch_hosts", lambda stop: None)  # a thread _recover starts
    tasks._recover()
    assert sent == [job_id_of("a"), job_id_of("b"), job_id_of("c")]
