"""Keys, tokens and sign-ins under attack: a disabled key stays dead, and guessing throttles only the guesser."""

from __future__ import annotations

import pytest
from tests.integration.admin.admin_helpers import AdminClient
from tests.integration.admin.test_console_pages import csrf_of, sign_in
from tests.support.identity import new_account

pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

OWNER_ADDRESS = "10.1.1.1"
ATTACKER_ADDRESS = "10.6.6.6"


@pytest.fixture
def tenant(session_factory, client):
    keys = new_account(session_factory, "tenant")
    return keys, AdminClient(client, keys.access_key_id, keys.secret_access_key)


def test_re_enabling_a_disabled_key_does_not_revive_its_tokens_sessions_or_sts_credentials(app, client, tenant):
    keys, tenant_api = tenant
    admin = AdminClient(client)
    pair = {"access_key_id": keys.access_key_id, "secret_access_key": keys.secret_access_key}
    token = tenant_api.ok("POST", "/tokens", status=201, json_body=pair, auth="none")["token"]
    console = app.test_client()
    assert sign_in(console, keys.access_key_id, keys.secret_access_key).status_code == 302
    assert console.get("/console/endpoints").status_code == 200
    assert tenant_api.with_token(token).get("/whoami").status_code == 200

    admin.ok("POST", f"/access-keys/{keys.access_key_id}/disable")
    assert tenant_api.with_token(token).get("/whoami").status_code == 401
    assert console.get("/console/endpoints").status_code == 302
    admin.ok("POST", f"/access-keys/{keys.access_key_id}/enable")

    # The key works again; what it had issued before it was disabled does not.
    assert tenant_api.get("/whoami").status_code == 200
    refused = tenant_api.with_token(token).get("/whoami")
    assert refused.status_code == 401 and "revoked" in refused.get_json()["error"]["message"]
    assert console.get("/console/endpoints").status_code == 302
    fresh = app.test_client()
    assert sign_in(fresh, keys.access_key_id, keys.secret_access_key).status_code == 302


def test_disabling_a_key_ends_the_sts_credentials_it_obtained(live_front, ordinary):
    from botocore.exceptions import ClientError
    from tests.support.identity import assume, error_code

    temp = assume(live_front, ordinary, "arn:aws:iam::111122223333:role/Any")
    chained = assume(live_front, temp, "arn:aws:iam::111122223333:role/Chained")
    for keys in (temp, chained):
        live_front.client("sagemaker", keys).list_models()
    admin = live_front.flask_app.test_client()
    AdminClient(admin).ok("POST", f"/access-keys/{ordinary.access_key_id}/disable")
    AdminClient(admin).ok("POST", f"/access-keys/{ordinary.access_key_id}/enable")
    for keys in (temp, chained):
        with pytest.raises(ClientError) as caught:
            live_front.client("sagemaker", keys).list_models()
        assert error_code(caught) == "UnrecognizedClientException"


def test_wrong_secrets_for_a_key_throttle_the_guesser_not_the_owner(client, tenant):
    keys, _ = tenant
    wrong = {"access_key_id": keys.access_key_id, "secret_access_key": "not-the-secret"}
    right = {"access_key_id": keys.access_key_id, "secret_access_key": keys.secret_access_key}

    def post(body, address):
        return client.post("/api/v1/tokens", json=body, environ_base={"REMOTE_ADDR": address})

    for _ in range(5):
        assert post(wrong, ATTACKER_ADDRESS).status_code == 401
    assert post(wrong, ATTACKER_ADDRESS).status_code == 429
    # The owner, from their own address, is let in every time while the guessing goes on.
    for _ in range(3):
        assert post(right, OWNER_ADDRESS).status_code == 201
        assert post(wrong, ATTACKER_ADDRESS).status_code == 429
    # And the console sign-in shares the rule.
    page = client.get("/console/sign-in", environ_base={"REMOTE_ADDR": OWNER_ADDRESS})
    form = {"csrf_token": csrf_of(page), **right}
    resp = client.post("/console/sign-in", data=form, environ_base={"REMOTE_ADDR": OWNER_ADDRESS})
    assert resp.status_code == 302
