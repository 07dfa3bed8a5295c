"""Compilation job fixtures: call helpers, a live server for the embedded S3 store, the runner."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.integration.compilation.compilation_helpers import BUCKET
from tests.support.waiting import wait_for

# TorchScript is deprecated upstream but is the artifact format under test.
JIT_DEPRECATION = "ignore:`torch.jit.:DeprecationWarning"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration/compilation" in str(item.path):
            item.add_marker(pytest.mark.filterwarnings(JIT_DEPRECATION))


@pytest.fixture
def ok(sagemaker) -> Callable[..., dict[str, Any]]:
    """Call an operation and assert HTTP 200; return the body."""

    def call(operation: str, params: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        status, body = sagemaker(operation, params or {}, **kw)
        assert status == 200, (operation, body)
        return body

    return call


@pytest.fixture
def fails(sagemaker) -> Callable[..., str]:
    """Call an operation, assert a 400 with the given code; return the message."""

    def call(operation: str, params: dict[str, Any], code: str = "ValidationException", **kw: Any) -> str:
        status, body = sagemaker(operation, params, **kw)
        assert status == 400, (operation, status, body)
        assert body["__type"] == code, body
        message: str = body["message"]
        return message

    return call


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live_url(app) -> Iterator[str]:
    """Serve the app (SageMaker API + embedded S3) with uvicorn on a free loopback port."""
    import a2wsgi
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(a2wsgi.WSGIMiddleware(app), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "uvicorn exited"
        return bool(server.started)

    wait_for(started, 10, what="uvicorn to start", interval=0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def s3(live_url) -> Any:
    """A boto3 S3 client on the embedded store, with the bucket the tests compile from and into."""
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=live_url + "/s3",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def runner_config(settings) -> Any:
    """The worker's runner configuration, with a short measurement budget and lease for tests."""
    from neurondock_workers.compile_job import RunnerConfig

    return RunnerConfig.from_settings(settings, measure_budget_s=0.2, lease_timeout=5.0, heartbeat_interval=0.2)


@pytest.fixture
def job_id_of(session_factory) -> Callable[[str], int]:
    """Return the database id of the caller's job by name."""
    from sqlalchemy import select

    from neurondock_platform.models import CompilationJob

    def lookup(name: str) -> int:
        with session_factory() as session:
            value = session.scalar(select(CompilationJob.id).where(CompilationJob.name == name))
            assert value is not None, name
            return int(value)

    return lookup


@pytest.fixture
def run_job(session_factory, settings, live_url, s3, runner_config) -> Callable[..., str]:
    """Call the compile runner directly (not through Celery), as the task does: acting as the job's owner."""
    from neurondock_platform.s3_client import OwnerClients
    from neurondock_workers.compile_job import run_compilation_job

    clients = OwnerClients(settings.with_overrides(public_url=live_url), session_factory, session_name="compile-tests")

    def run(job_id: int, **overrides: Any) -> str:
        config = runner_config
        if overrides:
            from dataclasses import replace

            config = replace(runner_config, **overrides)
        return run_compilation_job(session_factory, job_id, clients, config)

    return run
