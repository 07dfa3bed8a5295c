"""CloudWatch and Application Auto Scaling fixtures: the app on a loopback port, real boto3 clients
(JSON 1.0, and Query through botocore's own serializer), a second account, endpoint rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore
import pytest
from botocore.config import Config
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.integration.admin.conftest import world  # noqa: F401  (endpoints with replicas on a host)
from tests.support.cloudwatch import write_query_model
from tests.support.services import wsgi_server

REGION = "us-east-1"


@pytest.fixture
def server(app) -> Iterator[str]:
    with wsgi_server(app) as url:
        yield url


def _client(
    service: str, url: str, *, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, session: Any = None
) -> Any:
    return (session or boto3).client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture
def clients(server) -> Callable[..., Any]:
    """``clients("cloudwatch")``; pass ``access_key``/``secret_key`` for another account."""

    def make(service: str, **kw: Any) -> Any:
        return _client(service, server, **kw)

    return make


@pytest.fixture
def cw(clients):
    return clients("cloudwatch")


@pytest.fixture
def aas(clients):
    return clients("application-autoscaling")


def query_protocol_session(tmp: Path) -> Any:
    """A boto3 session whose CloudWatch model speaks only the Query protocol (``tests/support/cloudwatch.py``)."""
    session = botocore.session.Session()
    session.get_component("data_loader").search_paths.insert(0, str(write_query_model(tmp)))
    return boto3.session.Session(botocore_session=session)


@pytest.fixture
def cw_query(server, tmp_path):
    return _client("cloudwatch", server, session=query_protocol_session(tmp_path / "models"))


@pytest.fixture
def other(db) -> dict[str, str]:
    """Another account's signing keys (``access_key``, ``secret_key``) and its ``account_id``."""
    from neurondock_platform.services.accounts import create_account

    def create(session: Any) -> dict[str, str]:
        account, key = create_account(session, "other")
        return {"account_id": account.id, "access_key": key.access_key_id, "secret_key": key.secret_access_key}

    created: dict[str, str] = db(create)
    return created


@pytest.fixture
def db(session_factory) -> Callable[..., Any]:
    from neurondock_platform.db import session_scope

    def run(fn: Callable[[Any], Any]) -> Any:
        with session_scope(session_factory) as session:
            return fn(session)

    return run
