"""Revoking bearer tokens and console sessions, and limiting sign-in attempts (issue 6)."""

from __future__ import annotations

import time

import pytest
from tests.conftest import ACCESS_KEY, ACCOUNT_ID, SECRET_KEY
from tests.integration.admin.admin_helpers import AdminClient
from tests.integration.admin.test_console_pages import csrf_of, page_csrf, sign_in

KEY_PAIR = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(app, settings) -> FakeClock:
    """Give the app a sign-in limiter driven by a fake clock (10 per key, 30 per address, per minute)."""
    from neurondock_platform.api.admin._tokens import SIGN_IN_LIMITER_EXTENSION
    from neurondock_platform.services.rate_limits import SignInLimiter

    fake = FakeClock()
    app.extensions[SIGN_IN_LIMITER_EXTENSION] = SignInLimiter.from_settings(settings, clock=fake)
    return fake


def _token(api, **key_pair) -> str:
    """Issue a token over SigV4, or with the key pair in the body when given one."""
    if key_pair:
        return api.ok("POST", "/tokens", status=201, json_body=key_pair, auth="none")["token"]
    return api.ok("POST", "/tokens", status=201)["token"]


def _console_cookie(client) -> str:
    cookie = client.get_cookie("nd_session", path="/console")
    assert cookie is not None
    return cookie.value


# --- revoking bearer tokens -------------------------------------------------------------------------


def test_a_revoked_token_is_refused_exactly_like_an_invalid_one(api):
    token = _token(api)
    assert api.with_token(token).ok("GET", "/whoami")["auth"] == "bearer"
    revoked = api.with_token(token).ok("POST", "/tokens/revoke")
    assert revoked["revoked"] is True and revoked["purpose"] == "api" and revoked["account_id"] == ACCOUNT_ID
    refused = api.with_token(token).get("/whoami")
    invalid = api.with_token("nd1.garbage.garbage").get("/whoami")
    assert refused.status_code == invalid.status_code == 401
    assert refused.headers["WWW-Authenticate"] == invalid.headers["WWW-Authenticate"]
    assert refused.get_json()["error"]["code"] == invalid.get_json()["error"]["code"] == "Unauthenticated"
    assert "revoked" in refused.get_json()["error"]["message"]
    # Revoking it again is refused too: the token no longer authenticates anything.
    assert api.with_token(token).post("/tokens/revoke").status_code == 401


def test_revoking_one_token_leaves_the_others_of_the_key_alone(api):
    first, second = _token(api), _token(api)
    api.with_token(first).ok("POST", "/tokens/revoke", json_body={"token": second})
    assert api.with_token(second).get("/whoami").status_code == 401
    assert api.with_token(first).get("/whoami").status_code == 200
    # SigV4 may revoke a token it names, and names it must.
    third = _token(api)
    api.ok("POST", "/tokens/revoke", json_body={"token": third})
    assert api.with_token(third).get("/whoami").status_code == 401
    resp = api.post("/tokens/revoke")
    assert resp.status_code == 400 and "member 'token'" in resp.get_json()["error"]["message"]


def test_a_token_that_is_not_a_valid_one_cannot_be_revoked(api):
    token = _token(api)
    prefix, payload, signature = token.split(".")
    forged = f"{prefix}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    for value in (forged, "garbage"):
        resp = api.post("/tokens/revoke", {"token": value})
        assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "ValidationError"
    assert api.with_token(token).get("/whoami").status_code == 200


def test_another_account_cannot_revoke_your_token_but_an_admin_can_revoke_theirs(api, tenant):
    root_token = _token(api)
    tenant_token = _token(tenant.api)
    resp = tenant.api.with_token(tenant_token).post("/tokens/revoke", {"token": root_token})
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "AccessDenied"
    assert api.with_token(root_token).get("/whoami").status_code == 200
    api.ok("POST", "/tokens/revoke", json_body={"token": tenant_token})
    assert tenant.api.with_token(tenant_token).get("/whoami").status_code == 401


def test_an_expired_token_is_reported_revoked_without_storing_anything(api, session_factory):
    from neurondock_platform.models import RevokedToken
    from neurondock_platform.services import sessions
    from neurondock_platform.sigv4 import Credential

    old = sessions.issue_token(ACCESS_KEY, Credential(SECRET_KEY, ACCOUNT_ID), ttl_seconds=60, now=time.time() - 600)
    assert api.ok("POST", "/tokens/revoke", json_body={"token": old.value})["token_id"] == old.claims.jti
    with session_factory() as session:
        assert session.get(RevokedToken, old.claims.jti) is None


def test_revocations_reach_another_api_process_within_the_refresh_interval(api, settings, session_factory, dispatcher):
    from neurondock_platform.api.admin._tokens import REVOCATIONS_EXTENSION
    from neurondock_platform.app import create_app
    from neurondock_platform.services.revocations import RevocationCache

    other_app = create_app(settings, session_factory=session_factory, dispatcher=dispatcher)
    fake = FakeClock()
    other_app.extensions[REVOCATIONS_EXTENSION] = RevocationCache(session_factory, refresh_seconds=1.0, clock=fake)
    other = AdminClient(other_app.test_client())
    token = _token(api)
    assert other.with_token(token).get("/whoami").status_code == 200  # loads the other process's copy
    api.with_token(token).ok("POST", "/tokens/revoke")
    assert api.with_token(token).get("/whoami").status_code == 401  # the revoking process: at once
    fake.advance(0.5)
    assert other.with_token(token).get("/whoami").status_code == 200  # within the documented bound
    fake.advance(0.5)
    assert other.with_token(token).get("/whoami").status_code == 401


def test_expired_revocations_are_purged_when_another_is_written(api, session_factory):
    import datetime as dt

    from neurondock_platform.db import utcnow
    from neurondock_platform.models import RevokedToken

    past = utcnow() - dt.timedelta(hours=1)
    with session_factory.begin() as session:
        session.add(
            RevokedToken(jti="stale", access_key_id=ACCESS_KEY, account_id=ACCOUNT_ID, revoked_at=past, expires_at=past)
        )
    api.with_token(_token(api)).ok("POST", "/tokens/revoke")
    with session_factory() as session:
        assert session.get(RevokedToken, "stale") is None


def test_an_admin_revokes_every_token_of_a_key_which_stays_usable(api, tenant, client):
    from neurondock_platform.services import sessions
    from neurondock_platform.sigv4 import Credential

    tenant_token = _token(tenant.api)
    sign_in(client, tenant.access_key, tenant.secret_key)
    assert client.get("/console/endpoints").status_code == 200
    assert tenant.api.post(f"/access-keys/{tenant.access_key}/revoke-tokens").status_code == 403
    done = api.ok("POST", f"/access-keys/{tenant.access_key}/revoke-tokens")
    assert done["access_key_id"] == tenant.access_key and done["account_id"] == tenant.account_id
    assert tenant.api.with_token(tenant_token).get("/whoami").status_code == 401
    assert client.get("/console/endpoints").status_code == 302
    assert tenant.api.get("/whoami").status_code == 200  # SigV4 with the key itself still works
    # Tokens issued after the cut-off work (seconds resolution: one issued in the same second would not).
    later = sessions.issue_token(
        tenant.access_key, Credential(tenant.secret_key, tenant.account_id), now=time.time() + 2
    )
    assert tenant.api.with_token(later.value).get("/whoami").status_code == 200
    assert api.post("/access-keys/AKNDNOSUCHKEY0000000/revoke-tokens").status_code == 404


# --- console sign-out ----------------------------------------------------------------------------------


def test_signing_out_revokes_the_session_so_a_copied_cookie_stops_working(client):
    assert sign_in(client).status_code == 302
    copied = _console_cookie(client)
    token = page_csrf(client)
    resp = client.post("/console/sign-out", data={"csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/console/sign-in")
    client.set_cookie("nd_session", copied, path="/console")
    resp = client.get("/console/endpoints")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/console/sign-in")


def test_signing_out_ends_only_that_session(app, client):
    sign_in(client)
    other = app.test_client()
    sign_in(other)
    client.post("/console/sign-out", data={"csrf_token": page_csrf(client)})
    assert other.get("/console/endpoints").status_code == 200


def test_a_session_cookie_revoked_through_the_api_stops_working(api, client):
    sign_in(client)
    api.ok("POST", "/tokens/revoke", json_body={"token": _console_cookie(client)})
    assert client.get("/console/endpoints").status_code == 302


# --- rate limits -----------------------------------------------------------------------------------------


def test_token_issuance_is_limited_per_key_with_retry_after_and_refills(api, clock):
    for _ in range(10):
        _token(api, **KEY_PAIR)
    resp = api.post("/tokens", KEY_PAIR, auth="none")
    assert resp.status_code == 429
    body = resp.get_json()
    assert body["__type"] == "ThrottlingException" and body["message"] == "Rate exceeded"
    assert resp.headers["Retry-After"] == "6"  # one attempt of 10 per minute
    # SigV4 issuance counts against the same key.
    assert api.post("/tokens").status_code == 429
    clock.advance(5)
    assert api.post("/tokens", KEY_PAIR, auth="none").status_code == 429
    clock.advance(1)
    assert api.post("/tokens", KEY_PAIR, auth="none").status_code == 201


def test_wrong_secrets_cost_more_but_never_lock_the_right_one_out(api, clock):
    wrong = {**KEY_PAIR, "secret_access_key": "not-it"}
    for _ in range(5):
        assert api.post("/tokens", wrong, auth="none").status_code == 401
    resp = api.post("/tokens", KEY_PAIR, auth="none")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "6"
    clock.advance(6)
    assert api.post("/tokens", KEY_PAIR, auth="none").status_code == 201


def test_token_issuance_is_limited_per_address(api, clock):
    # 30 attempts a minute per address, and each of these wrong guesses (at never-seen keys) costs 2.
    for n in range(15):
        resp = api.post("/tokens", {"access_key_id": f"AKNDUNKNOWN{n:09d}", "secret_access_key": "x"}, auth="none")
        assert resp.status_code == 401
    resp = api.post("/tokens", KEY_PAIR, auth="none")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "2"
    other = api.client.post("/api/v1/tokens", json=KEY_PAIR, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 201
    clock.advance(60)
    assert api.post("/tokens", KEY_PAIR, auth="none").status_code == 201


def test_console_sign_in_is_limited_with_a_clear_page_and_refills(client, clock):
    for _ in range(5):
        assert sign_in(client, secret_key="not-the-secret").status_code == 401
    resp = sign_in(client)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "6"
    page = resp.get_data(as_text=True)
    assert "Too many sign-in attempts" in page and csrf_of(resp)
    clock.advance(6)
    assert sign_in(client).status_code == 302


def test_console_sign_in_and_token_issuance_share_the_per_key_budget(api, client, clock):
    for _ in range(10):
        _token(api, **KEY_PAIR)
    assert sign_in(client).status_code == 429
