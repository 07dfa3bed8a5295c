"""Admin-API fixtures: signed clients for root and a second account, and a small world of resources."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from tests.integration.admin.admin_helpers import AdminClient


@pytest.fixture
def api(client) -> AdminClient:
    """The root (admin) account, signing with SigV4."""
    return AdminClient(client)


@dataclass
class Tenant:
    account_id: str
    access_key: str
    secret_key: str
    api: AdminClient


@pytest.fixture
def tenant(session_factory, client) -> Tenant:
    """A second, non-admin account with one access key."""
    from neurondock_platform.db import session_scope
    from neurondock_platform.services.accounts import create_account

    with session_scope(session_factory) as session:
        account, key = create_account(session, "tenant")
        ids = (account.id, key.access_key_id, key.secret_access_key)
    return Tenant(ids[0], ids[1], ids[2], AdminClient(client, ids[1], ids[2]))


@pytest.fixture
def world(session_factory, settings) -> Callable[..., Any]:
    """Create a model, config and endpoint through the services; optionally mark it running on a host."""
    from tests.support.world import build_endpoint

    return functools.partial(build_endpoint, session_factory, settings)
