"""Fixtures for the S3 store tests: a bucket, a second account, and live uvicorn servers (one per test, or
one per module with its own database for modules of many short boto3 calls)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from tests.support.waiting import wait_for

BUCKET = "test-bucket"


@pytest.fixture
def bucket(s3_request) -> str:
    resp = s3_request("PUT", f"/{BUCKET}")
    assert resp.status_code == 200, resp.data
    return BUCKET


@pytest.fixture
def other_account(session_factory) -> tuple[str, str, str]:
    """A second account's (account id, access key id, secret)."""
    from neurondock_platform.db import session_scope
    from neurondock_platform.services.accounts import create_account

    with session_scope(session_factory) as session:
        account, key = create_account(session, "other")
        return account.id, key.access_key_id, key.secret_access_key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve the app with uvicorn (behind a2wsgi) on a free loopback port; yield the S3 endpoint URL."""
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
    try:
        yield f"http://127.0.0.1:{port}/s3"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_server(app):
    with serve(app) as url:
        yield url


@dataclass(frozen=True)
class LiveStore:
    """One live server for a whole module: its S3 URL and two accounts' (account id, key id, secret)."""

    url: str
    root: tuple[str, str, str]
    other: tuple[str, str, str]
    data_dir: Any

    def client(self, account: tuple[str, str, str] | None = None, **config: Any) -> Any:
        """A real boto3 S3 client for ``account`` (the root account by default), without retries."""
        import boto3
        from botocore.config import Config

        _, key_id, secret = account or self.root
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, **config),
        )


@pytest.fixture(scope="module")
def live_store(tmp_path_factory) -> Iterator[LiveStore]:
    """A module-wide app on SQLite with a second account, served by uvicorn on loopback."""
    from tests.conftest import ACCESS_KEY, ACCOUNT_ID, SECRET_KEY

    from neurondock_platform import models  # noqa: F401  (registers the tables)
    from neurondock_platform.app import create_app
    from neurondock_platform.config import Settings
    from neurondock_platform.db import Base, make_engine, make_sessionmaker, session_scope
    from neurondock_platform.dispatch import RecordingDispatcher
    from neurondock_platform.services.accounts import create_account, ensure_root_account, root_identity

    data_dir = tmp_path_factory.mktemp("s3-live") / "nd"
    settings = Settings.from_env(
        {},
        data_dir=data_dir,
        root_access_key_id=ACCESS_KEY,
        root_secret_access_key=SECRET_KEY,
        account_id=ACCOUNT_ID,
        host_id="host-test",
    )
    data_dir.mkdir(parents=True)
    engine = make_engine(settings.database_url)
    Base.metadata.create_all(engine)
    factory = make_sessionmaker(engine)
    with session_scope(factory) as session:
        ensure_root_account(session, root_identity(settings))
        account, key = create_account(session, "other")
        other = (account.id, key.access_key_id, key.secret_access_key)
    app = create_app(settings, session_factory=factory, dispatcher=RecordingDispatcher())
    try:
        with serve(app) as url:
            yield LiveStore(url, (ACCOUNT_ID, ACCESS_KEY, SECRET_KEY), other, data_dir)
    finally:
        engine.dispose()
