"""Fixtures for the S3 store tests: a bucket, a second account, and a live uvicorn server."""

from __future__ import annotations

import socket
import threading
import time

import pytest

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


@pytest.fixture
def live_server(app):
    """Serve the app with uvicorn (behind a2wsgi) on a free loopback port; yield the S3 endpoint URL."""
    import a2wsgi
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(a2wsgi.WSGIMiddleware(app), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}/s3"
    server.should_exit = True
    thread.join(timeout=10)
