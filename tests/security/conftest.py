"""Fixtures of the security tests.

Identity: the whole HTTP front (Flask + data plane) served by uvicorn on a loopback port, accounts and
their keys, and AssumeRole through boto3.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.identity import Keys, LiveFront, new_account
from tests.support.waiting import wait_for

from neurondock_platform.config import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live_front(settings: Settings, session_factory: Any, dispatcher: Any) -> Iterator[LiveFront]:
    """Serve the whole front (control plane, S3, STS, runtime) like ``neurondock api`` does."""
    import uvicorn

    from neurondock_platform.server import NeurondockASGI, uvicorn_config

    port = _free_port()
    settings = settings.with_overrides(port=port, public_url=f"http://127.0.0.1:{port}")
    asgi = NeurondockASGI(settings, session_factory=session_factory, dispatcher=dispatcher)
    server = uvicorn.Server(uvicorn_config(asgi, settings, host="127.0.0.1", port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "uvicorn exited"
        return bool(server.started)

    wait_for(started, 15, what="uvicorn to start", interval=0.01)
    yield LiveFront(f"http://127.0.0.1:{port}", asgi)
    server.should_exit = True
    thread.join(timeout=15)


@pytest.fixture
def root_keys(settings: Settings) -> Keys:
    """The root (admin) account's key pair."""
    return Keys(settings.account_id, settings.root_access_key_id, settings.root_secret_access_key)


@pytest.fixture
def ordinary(session_factory: Any) -> Keys:
    """An ordinary (non-admin) account."""
    return new_account(session_factory, "ordinary")
