"""The per-process revocation cache against a real SQLite file, with its refresh clock moved by hand."""

from __future__ import annotations

import datetime as dt

import pytest

from neurondock_platform.services import revocations, sessions
from neurondock_platform.sigv4 import Credential

CREDENTIAL = Credential("unit-test-secret-0000000000000000000000", "123456789012")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def factory(tmp_path):
    from neurondock_platform import models  # noqa: F401  (registers the tables)
    from neurondock_platform.db import Base, make_engine, make_sessionmaker

    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    Base.metadata.create_all(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_rows_written_elsewhere_show_up_after_the_refresh_interval(factory):
    clock = Clock()
    cache = revocations.RevocationCache(factory, refresh_seconds=1.0, clock=clock)
    token = sessions.issue_token("AKND1", CREDENTIAL)
    assert not cache.refuses(token.claims)
    with factory.begin() as session:
        revocations.revoke_token(session, token.claims)
    clock.now += 0.9
    assert not cache.refuses(token.claims)
    clock.now += 0.1
    assert cache.refuses(token.claims)


def test_noted_rows_apply_at_once_and_survive_a_refresh_that_missed_them(factory, monkeypatch):
    clock = Clock()
    cache = revocations.RevocationCache(factory, refresh_seconds=1.0, clock=clock)
    token = sessions.issue_token("AKND1", CREDENTIAL)
    cache.refuses(token.claims)
    with factory.begin() as session:
        row = revocations.revoke_token(session, token.claims)
    cache.note([row])
    assert cache.refuses(token.claims)
    # A refresh whose query ran before the commit (simulated: it sees no rows) keeps the noted row.
    monkeypatch.setattr(cache, "_load", lambda since: [])
    clock.now += 1.0
    assert cache.refuses(token.claims)


def test_revoking_a_key_refuses_its_earlier_tokens_only(factory):
    clock = Clock()
    cache = revocations.RevocationCache(factory, refresh_seconds=1.0, clock=clock)
    now = dt.datetime.now(dt.UTC)
    before = sessions.issue_token("AKND1", CREDENTIAL, now=now.timestamp() - 5)
    after = sessions.issue_token("AKND1", CREDENTIAL, now=now.timestamp() + 5)
    other_key = sessions.issue_token("AKND2", CREDENTIAL, now=now.timestamp() - 5)
    with factory.begin() as session:
        revocations.revoke_key_tokens(session, "AKND1", CREDENTIAL.account_id, now=now)
    assert cache.refuses(before.claims)
    assert not cache.refuses(after.claims)
    assert not cache.refuses(other_key.claims)


def test_verify_token_refuses_revoked_and_id_less_tokens(factory):
    import base64
    import json

    token = sessions.issue_token("AKND1", CREDENTIAL)
    lookup = {"AKND1": CREDENTIAL}.get
    assert sessions.verify_token(token.value, lookup, purpose="api", revoked=lambda c: False).jti == token.claims.jti
    with pytest.raises(sessions.InvalidTokenError, match="revoked"):
        sessions.verify_token(token.value, lookup, purpose="api", revoked=lambda c: c.jti == token.claims.jti)
    body = {"k": "AKND1", "p": "api", "iat": 1, "exp": 2**40, "n": "x"}
    payload = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    legacy = f"nd1.{payload}.{sessions._sign(CREDENTIAL.secret_access_key, payload)}"
    with pytest.raises(sessions.InvalidTokenError, match="predates"):
        sessions.verify_token(legacy, lookup, purpose="api", revoked=None)
