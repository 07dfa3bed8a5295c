"""OwnerClients.keys: the keys a client built elsewhere (the host process's model-data reads) signs with."""

from __future__ import annotations

import pytest

import neurondock_platform.models as m
from neurondock_platform.config import Settings
from neurondock_platform.db import Base, make_engine, make_sessionmaker, session_scope
from neurondock_platform.models import TemporaryCredential
from neurondock_platform.s3_client import KEYS_MARGIN_SECONDS, OwnerClients, StoreOwner

ACCOUNT = "123456789012"


@pytest.fixture
def sessions(tmp_path):
    engine = make_engine("sqlite:///" + str(tmp_path / "t.db"))
    Base.metadata.create_all(engine)
    with session_scope(make_sessionmaker(engine)) as session:
        session.add(m.Account(id=ACCOUNT, name="test"))
    yield make_sessionmaker(engine)
    engine.dispose()


def test_a_store_that_knows_the_accounts_gets_the_roles_own_credentials_reissued_before_they_expire(tmp_path, sessions):
    settings = Settings(data_dir=tmp_path / "data").resolved()
    assert settings.store_knows_accounts
    clients = OwnerClients(settings, sessions, session_name="keys-test")
    owner = StoreOwner(ACCOUNT, None)

    first = clients.keys(owner)
    assert first.session_token and first.buckets is None and first.expires is not None
    assert (first.endpoint_url, first.region, first.account_id) == (
        settings.artifact_store_url,
        settings.region,
        ACCOUNT,
    )
    with session_scope(sessions) as session:
        row = session.get(TemporaryCredential, first.access_key_id)
        assert row is not None and (row.account_id, row.role_arn) == (ACCOUNT, owner.role)
    # Kept while more than the margin remains; issued afresh after that.
    assert clients.keys(owner, now=first.expires - KEYS_MARGIN_SECONDS - 1) == first
    fresh = clients.keys(owner, now=first.expires - KEYS_MARGIN_SECONDS + 1)
    assert fresh.access_key_id != first.access_key_id
    # Another role of the account has keys of its own.
    other = clients.keys(StoreOwner(ACCOUNT, f"arn:aws:iam::{ACCOUNT}:role/other"))
    assert other.access_key_id not in (first.access_key_id, fresh.access_key_id)
