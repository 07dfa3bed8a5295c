"""Shared fixtures: settings → engine → session factory → app → signed clients."""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from neurondock_platform.config import Settings

ACCESS_KEY = "AKNDTESTROOT00000001"
SECRET_KEY = "test-secret-key-for-neurondock-0000000001"
ACCOUNT_ID = "123456789012"
_PLATFORM_ERRORS = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    # The suite starts hundreds of Python processes (platforms, replicas, standbys, CLIs, examples). With
    # PYTHONDONTWRITEBYTECODE set, each compiled the sources it imports again and pytest rewrote every test
    # module on every run (collection: 11-13 s, 6 s with caches). The caches are gitignored.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False
    # This process's heap grows past 600,000 objects (torch, botocore's models, every test module), and
    # Python's default makes every tenth middle collection a full one: 0.3-0.5 s each here, 9.8 s of a 69 s
    # run of tests/integration/admin + tests/unit/compiler. One in a hundred: 3.1 s. Processes the tests
    # start keep the default.
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)
    from tests.support import botocore_models

    botocore_models.install()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """When a test that ran a live platform fails, keep the errors its processes logged."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    from tests.support.platform import Platform

    values = list(getattr(item, "funcargs", {}).values())
    values += [v for value in values if isinstance(value, tuple) for v in value]
    for plat in {id(v): v for v in values if isinstance(v, Platform)}.values():
        errors = plat.errors()
        if errors:
            item.config.stash.setdefault(_PLATFORM_ERRORS, []).append(f"{item.nodeid}:\n{errors}")


def pytest_terminal_summary(terminalreporter, config):
    """Print them next to the short summary, where a CI log's tail shows them."""
    for block in config.stash.get(_PLATFORM_ERRORS, []):
        terminalreporter.write_sep("-", "errors the platform logged during a failed test")
        terminalreporter.write_line(block)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.from_env(
        {},
        data_dir=tmp_path / "nd",
        root_access_key_id=ACCESS_KEY,
        root_secret_access_key=SECRET_KEY,
        account_id=ACCOUNT_ID,
        host_id="host-test",
    )


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def engine(request, settings):
    """A database holding the schema: SQLite in the data dir, or a fresh PostgreSQL database."""
    from neurondock_platform.db import make_engine
    from tests.support import schema, services

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if request.param == "sqlite":
        eng = make_engine(schema.sqlite_with_schema(Path(settings.database_url.removeprefix("sqlite:///"))))
        yield eng
        eng.dispose()
        return
    if not services.postgres_available():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with schema.postgres_with_schema() as url:
        eng = make_engine(url)
        yield eng
        eng.dispose()


@pytest.fixture
def session_factory(engine, settings):
    from neurondock_platform.db import make_sessionmaker, session_scope
    from neurondock_platform.services.accounts import ensure_root_account, root_identity

    factory = make_sessionmaker(engine)
    with session_scope(factory) as session:
        ensure_root_account(session, root_identity(settings))
    return factory


@pytest.fixture
def dispatcher():
    from neurondock_platform.dispatch import RecordingDispatcher

    return RecordingDispatcher()


@pytest.fixture
def app(settings, session_factory, dispatcher):
    from neurondock_platform.app import create_app

    return create_app(settings, session_factory=session_factory, dispatcher=dispatcher)


@pytest.fixture
def client(app):
    return app.test_client()


def sign(
    method: str,
    url: str,
    *,
    service: str = "sagemaker",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    region: str = "us-east-1",
) -> dict[str, str]:
    """Sign a request the way boto3 does and return the headers to send."""
    from botocore.auth import S3SigV4Auth, SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    auth_cls = S3SigV4Auth if service == "s3" else SigV4Auth
    auth_cls(Credentials(access_key, secret_key), service, region).add_auth(req)
    return dict(req.headers.items())


@pytest.fixture
def sagemaker(client) -> Callable[..., Any]:
    """Call a SageMaker operation through the Flask test client; returns (status, json)."""

    def call(operation: str, params: dict[str, Any] | None = None, **sign_kwargs: Any) -> tuple[int, dict[str, Any]]:
        body = json.dumps(params or {}).encode()
        headers = {
            "X-Amz-Target": f"SageMaker.{operation}",
            "Content-Type": "application/x-amz-json-1.1",
        }
        signed = sign("POST", "http://localhost/", body=body, headers=headers, **sign_kwargs)
        resp = client.post("/", data=body, headers=signed)
        return resp.status_code, (resp.get_json(force=True, silent=True) or {})

    return call


@pytest.fixture
def s3_request(client) -> Callable[..., Any]:
    """Send a signed S3 request (path under /s3) through the Flask test client."""

    def call(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, **kw: Any):
        url = "http://localhost/s3" + path
        hdrs = dict(headers or {})
        import hashlib

        hdrs.setdefault("x-amz-content-sha256", hashlib.sha256(body).hexdigest())
        signed = sign(method, url, service="s3", body=body, headers=hdrs, **kw)
        parts = urlsplit(url)
        return client.open(parts.path, method=method, query_string=parts.query, data=body, headers=signed)

    return call
