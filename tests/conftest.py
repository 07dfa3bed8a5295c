"""Shared fixtures: settings → engine → session factory → app → signed clients."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from neurondock_platform.config import Settings

ACCESS_KEY = "AKNDTESTROOT00000001"
SECRET_KEY = "test-secret-key-for-neurondock-0000000001"
ACCOUNT_ID = "123456789012"


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
    """A migrated-by-metadata database: SQLite in the data dir, or a fresh PostgreSQL database."""
    from neurondock_platform import models  # noqa: F401  (registers the tables)
    from neurondock_platform.db import Base, make_engine
    from tests.support import services

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if request.param == "sqlite":
        eng = make_engine(settings.database_url)
        Base.metadata.create_all(eng)
        yield eng
        eng.dispose()
        return
    if not services.postgres_available():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    with services.fresh_postgres_database() as url:
        eng = make_engine(url)
        Base.metadata.create_all(eng)
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
