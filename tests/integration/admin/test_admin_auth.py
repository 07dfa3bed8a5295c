"""Who may call the admin API: SigV4, bearer tokens, admin-only routes, and another account's view."""

from __future__ import annotations

import time

from tests.conftest import ACCESS_KEY, ACCOUNT_ID, SECRET_KEY


def test_requests_without_credentials_are_401_with_the_error_body(api):
    resp = api.get("/models", auth="none")
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "Unauthenticated"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_bad_signature_is_401(api):
    resp = api.as_key(ACCESS_KEY, "not-the-secret").get("/whoami")
    assert resp.status_code == 401
    assert "signature" in resp.get_json()["error"]["message"].lower()


def test_sigv4_identifies_the_admin_account(api):
    who = api.ok("GET", "/whoami")
    assert who == {
        "account_id": ACCOUNT_ID,
        "account_name": "root",
        "is_admin": True,
        "access_key_id": ACCESS_KEY,
        "auth": "sigv4",
        "region": "us-east-1",
    }


def test_a_token_issued_for_the_key_pair_authenticates_as_bearer(api):
    issued = api.ok(
        "POST",
        "/tokens",
        status=201,
        json_body={"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "ttl_seconds": 600},
        auth="none",
    )
    assert issued["token_type"] == "Bearer" and issued["expires_in"] == 600
    who = api.with_token(issued["token"]).ok("GET", "/whoami")
    assert who["auth"] == "bearer" and who["account_id"] == ACCOUNT_ID


def test_a_token_can_be_issued_over_sigv4_but_not_with_another_token(api):
    token = api.ok("POST", "/tokens", status=201)["token"]
    resp = api.with_token(token).post("/tokens")
    assert resp.status_code == 403
    assert "bearer token cannot issue" in resp.get_json()["error"]["message"]


def test_a_wrong_secret_gets_no_token(api):
    resp = api.post("/tokens", {"access_key_id": ACCESS_KEY, "secret_access_key": "wrong"}, auth="none")
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "Unauthenticated"


def test_tampered_expired_and_foreign_tokens_are_rejected(api, settings):
    from neurondock_platform.services import sessions
    from neurondock_platform.sigv4 import Credential

    good = api.ok("POST", "/tokens", status=201)["token"]
    prefix, payload, signature = good.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    assert api.with_token(f"{prefix}.{payload}.{flipped}").get("/whoami").status_code == 401
    old = sessions.issue_token(ACCESS_KEY, Credential(SECRET_KEY, ACCOUNT_ID), ttl_seconds=60, now=time.time() - 3600)
    resp = api.with_token(old.value).get("/whoami")
    assert resp.status_code == 401 and "expired" in resp.get_json()["error"]["message"]
    console = sessions.issue_token(ACCESS_KEY, Credential(SECRET_KEY, ACCOUNT_ID), purpose=sessions.PURPOSE_CONSOLE)
    assert api.with_token(console.value).get("/whoami").status_code == 401
    assert api.with_token("garbage").get("/whoami").status_code == 401


def test_admin_only_routes_are_403_for_other_accounts(tenant):
    for method, path in [
        ("GET", "/accounts"),
        ("POST", "/accounts"),
        ("GET", "/access-keys"),
        ("GET", f"/accounts/{tenant.account_id}"),
        ("POST", f"/access-keys/{tenant.access_key}/disable"),
        ("POST", f"/access-keys/{tenant.access_key}/rotate"),
    ]:
        resp = tenant.api.request(method, path, json_body={"name": "x"} if method == "POST" else None)
        assert resp.status_code == 403, (method, path)
        assert resp.get_json()["error"]["code"] == "AccessDenied"


def test_another_accounts_resources_are_invisible(api, tenant, world):
    world("e1")
    assert [e["name"] for e in api.ok("GET", "/endpoints")["items"]] == ["e1"]
    assert tenant.api.ok("GET", "/endpoints")["items"] == []
    assert tenant.api.ok("GET", "/models")["items"] == []
    assert tenant.api.ok("GET", "/endpoint-configs")["items"] == []
    for path in [
        "/endpoints/e1",
        "/endpoints/e1/logs",
        "/endpoints/e1/errors",
        "/endpoints/e1/costs",
        "/models/e1-model",
    ]:
        resp = tenant.api.get(path)
        assert resp.status_code == 404, path
        assert resp.get_json()["error"]["code"] == "NotFound"
    assert tenant.api.delete("/endpoints/e1").status_code == 404
    # Still there for its owner.
    assert api.ok("GET", "/endpoints/e1")["status"] == "InService"


def test_another_account_sees_host_capacity_but_not_whose_replicas(api, tenant, world, settings):
    world("e1", instance_type="ml.inf1.xlarge")
    mine = api.ok("GET", f"/hosts/{settings.host_id}")
    theirs = tenant.api.ok("GET", f"/hosts/{settings.host_id}")
    assert mine["neuron_cores_in_use"] == theirs["neuron_cores_in_use"] == 4
    assert mine["replicas"][0]["endpoint_name"] == "e1"
    assert theirs["replicas"][0] == {
        "id": mine["replicas"][0]["id"],
        "host_id": settings.host_id,
        "owner": "another account",
        "state": "Ready",
        "chips": [0],
        "neuron_cores": [0, 1, 2, 3],
    }
    ls = tenant.api.ok("GET", f"/hosts/{settings.host_id}/neuron-ls")
    assert ls["neuron_devices"][0]["neuron_processes"] == [
        {"pid": None, "command": "another account", "neuron_runtime_version": "emulated", "replica_id": None}
    ]


def test_accounts_and_keys_lifecycle(api, client):
    created = api.ok("POST", "/accounts", status=201, json_body={"name": "team-a"})
    account_id = created["account"]["id"]
    key = created["access_key"]
    assert created["account"]["is_admin"] is False and key["status"] == "Active"
    team = api.as_key(key["access_key_id"], key["secret_access_key"])
    assert team.ok("GET", "/whoami")["account_id"] == account_id

    listed = api.ok("GET", "/accounts")["items"]
    assert {a["name"] for a in listed} == {"root", "team-a"}
    detail = api.ok("GET", f"/accounts/{account_id}")
    assert [k["access_key_id"] for k in detail["access_keys"]] == [key["access_key_id"]]
    assert "secret_access_key" not in detail["access_keys"][0]

    disabled = api.ok("POST", f"/access-keys/{key['access_key_id']}/disable")
    assert disabled["status"] == "Inactive"
    assert team.get("/whoami").status_code == 401  # at once, not after the cache's TTL
    api.ok("POST", f"/access-keys/{key['access_key_id']}/enable")
    assert team.get("/whoami").status_code == 200

    token = team.ok("POST", "/tokens", status=201)["token"]
    rotated = api.ok("POST", f"/access-keys/{key['access_key_id']}/rotate", status=201)
    assert rotated["replaced"]["status"] == "Inactive"
    new = rotated["access_key"]
    assert team.get("/whoami").status_code == 401
    assert team.with_token(token).get("/whoami").status_code == 401  # tokens of a disabled key die with it
    assert api.as_key(new["access_key_id"], new["secret_access_key"]).ok("GET", "/whoami")["account_id"] == account_id

    second = api.ok("POST", f"/accounts/{account_id}/access-keys", status=201)
    keys = api.ok("GET", f"/accounts/{account_id}/access-keys")["items"]
    assert {k["access_key_id"] for k in keys} == {key["access_key_id"], new["access_key_id"], second["access_key_id"]}


def test_the_root_key_cannot_be_disabled_or_rotated_from_the_api(api):
    for action in ("disable", "rotate"):
        resp = api.post(f"/access-keys/{ACCESS_KEY}/{action}")
        assert resp.status_code == 409, action
        assert "root key" in resp.get_json()["error"]["message"]


def test_unknown_accounts_and_keys_are_404(api):
    assert api.get("/accounts/000000000000").status_code == 404
    assert api.post("/access-keys/AKNDNOPE/disable").status_code == 404
