"""The web console through the Flask test client: sign-in, cookie flags, CSRF, every page, the forms."""

from __future__ import annotations

import io
import re
import tarfile

import pytest
from tests.conftest import ACCESS_KEY, ACCOUNT_ID, SECRET_KEY
from tests.integration.admin.test_admin_resources import _insert_job

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(resp) -> str:
    match = CSRF_RE.search(resp.get_data(as_text=True))
    assert match, "page has no CSRF field"
    return match.group(1)


def sign_in(client, access_key=ACCESS_KEY, secret_key=SECRET_KEY, next_url=None):
    page = client.get("/console/sign-in" + (f"?next={next_url}" if next_url else ""))
    form = {"csrf_token": csrf_of(page), "access_key_id": access_key, "secret_access_key": secret_key}
    if next_url:
        form["next"] = next_url
    return client.post("/console/sign-in", data=form)


@pytest.fixture
def engine(settings):
    """SQLite only: the console's behaviour does not depend on the database (the API tests run both)."""
    from neurondock_platform import models  # noqa: F401  (registers the tables)
    from neurondock_platform.db import Base, make_engine

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    eng = make_engine(settings.database_url)
    Base.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def console(client):
    resp = sign_in(client)
    assert resp.status_code == 302
    return client


def page_csrf(client, path: str = "/console/endpoints") -> str:
    return csrf_of(client.get(path))


def test_pages_redirect_to_sign_in_and_back(client):
    resp = client.get("/console/endpoints?q=x")
    assert resp.status_code == 302
    assert resp.headers["Location"].startswith("/console/sign-in?next=")
    resp = sign_in(client, next_url="/console/costs")
    assert resp.status_code == 302 and resp.headers["Location"] == "/console/costs"


def test_sign_in_never_redirects_off_the_console(client):
    resp = sign_in(client, next_url="https://evil.example/")
    assert resp.headers["Location"] == "/console/endpoints"
    resp = sign_in(client, next_url="//evil.example/console")
    assert resp.headers["Location"] == "/console/endpoints"


def test_session_cookie_flags(client):
    resp = sign_in(client)
    cookie = next(h for h in resp.headers.getlist("Set-Cookie") if h.startswith("nd_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie
    page = client.get("/console/sign-in", base_url="https://localhost")
    form = {"csrf_token": csrf_of(page), "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    resp = client.post("/console/sign-in", data=form, base_url="https://localhost")
    cookie = next(h for h in resp.headers.getlist("Set-Cookie") if h.startswith("nd_session="))
    assert "Secure" in cookie


def test_a_wrong_secret_is_refused(client):
    resp = sign_in(client, secret_key="wrong")
    assert resp.status_code == 401
    assert "wrong" in resp.get_data(as_text=True)
    assert client.get("/console/endpoints").status_code == 302


def test_sign_in_without_its_csrf_token_is_refused(client):
    client.get("/console/sign-in")
    resp = client.post(
        "/console/sign-in", data={"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "csrf_token": "forged"}
    )
    assert resp.status_code == 400 and "CSRF" in resp.get_data(as_text=True)


def test_every_form_rejects_a_missing_or_wrong_csrf_token(console, world, dispatcher):
    world("e1", instance_type="ml.c5.large")
    sent = len(dispatcher.sent)
    for path, data in [
        ("/console/endpoints", {"name": "e2", "model_name": "e1-model", "instance_type": "ml.c5.large"}),
        ("/console/endpoints/e1/delete", {}),
        ("/console/endpoints/e1/capacity", {"count-AllTraffic": "2"}),
        ("/console/endpoints/e1/update", {"endpoint_config_name": "x"}),
        ("/console/endpoints/e1/invoke", {"body": "[]"}),
        ("/console/models", {"name": "m9", "image": "x", "model_data_url": "s3://b/k"}),
        ("/console/models/e1-model/delete", {}),
        ("/console/accounts", {"name": "evil"}),
        ("/console/sign-out", {}),
    ]:
        for token in (None, "forged-token"):
            form = dict(data)
            if token:
                form["csrf_token"] = token
            resp = console.post(path, data=form)
            assert resp.status_code == 400, (path, token, resp.status_code)
    assert len(dispatcher.sent) == sent
    assert console.get("/console/endpoints/e1").status_code == 200  # still signed in, nothing changed
    assert "e2" not in console.get("/console/endpoints").get_data(as_text=True)


def test_every_page_renders(console, world, session_factory, settings):
    world("e1", instance_type="ml.inf1.xlarge")
    _insert_job(session_factory, settings)
    pages = [
        "/console/",
        "/console/endpoints",
        "/console/endpoints?q=e&status=InService",
        "/console/new/endpoint",
        "/console/endpoints/e1",
        "/console/models",
        "/console/new/model",
        "/console/models/e1-model",
        "/console/jobs",
        "/console/jobs/emb-job",
        "/console/fleet",
        "/console/fleet?partial=1",
        "/console/costs",
        "/console/accounts",
    ]
    for path in pages:
        resp = console.get(path, follow_redirects=True)
        assert resp.status_code == 200, path
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert ' style="' not in resp.get_data(as_text=True), f"{path} has an inline style the CSP blocks"
    job = console.get("/console/jobs/emb-job").get_data(as_text=True)
    assert "aten::embedding" in job and "not supported on Inf1" in job
    assert job.count("projected") >= 10 and "measured" in job
    fleet = console.get("/console/fleet").get_data(as_text=True)
    assert "emulated" in fleet and "e1/AllTraffic" in fleet and "NC3" in fleet
    # Charts reload every period and a half of the metrics flush (10 s by default).
    assert 'data-chart-refresh-ms="15000"' in console.get("/console/endpoints/e1").get_data(as_text=True)


def test_create_endpoint_from_the_form(console, world, dispatcher):
    world("e1", instance_type="ml.c5.large")
    token = page_csrf(console, "/console/new/endpoint")
    resp = console.post(
        "/console/endpoints",
        data={
            "csrf_token": token,
            "name": "from-console",
            "model_name": "e1-model",
            "instance_type": "ml.inf1.xlarge",
            "instance_count": "2",
        },
    )
    assert resp.status_code == 302 and resp.headers["Location"] == "/console/endpoints/from-console"
    status = console.get("/console/endpoints/from-console/status.json").get_json()
    assert status["status"] == "Creating" and status["in_progress"] is True
    assert status["variants"][0]["desired_instance_count"] == 2
    bad = console.post(
        "/console/endpoints",
        data={"csrf_token": token, "name": "bad name", "model_name": "e1-model", "instance_type": "ml.c5.large"},
    )
    assert bad.status_code == 400 and "regular expression" in bad.get_data(as_text=True)


def test_scale_and_delete_from_the_endpoint_page(console, world):
    world("e1", instance_type="ml.c5.large")
    token = page_csrf(console, "/console/endpoints/e1")
    resp = console.post("/console/endpoints/e1/capacity", data={"csrf_token": token, "count-AllTraffic": "2"})
    assert resp.status_code == 302
    assert console.get("/console/endpoints/e1/status.json").get_json()["status"] == "Updating"
    resp = console.post("/console/endpoints/e1/delete", data={"csrf_token": token})
    assert resp.status_code == 302
    assert console.get("/console/endpoints/e1/status.json").get_json()["status"] == "Deleting"


def test_switch_config_from_the_endpoint_page(console, world):
    world("e1", instance_type="ml.c5.large")
    world("e2", running=False, instance_type="ml.c5.xlarge")
    page = console.get("/console/endpoints/e1").get_data(as_text=True)
    other = re.search(r"<option>(e2-[0-9]+)</option>", page).group(1)
    resp = console.post(
        "/console/endpoints/e1/update", data={"csrf_token": csrf_of_text(page), "endpoint_config_name": other}
    )
    assert resp.status_code == 302
    status = console.get("/console/endpoints/e1/status.json").get_json()
    assert status["status"] == "Updating" and status["pending_update"]["endpoint_config_name"] == other


def csrf_of_text(text: str) -> str:
    match = CSRF_RE.search(text)
    assert match
    return match.group(1)


def test_json_helpers_report_a_deleted_endpoint_as_gone(console):
    # The endpoint page keeps polling while a delete finishes: a 404 would be a console error.
    for helper in ("status.json", "metrics.json", "logs.json"):
        resp = console.get(f"/console/endpoints/never-existed/{helper}")
        assert resp.status_code == 200 and resp.get_json()["gone"] is True, helper


def test_model_upload_packs_a_torchscript_file(console, settings):
    token = page_csrf(console, "/console/new/model")
    resp = console.post(
        "/console/models",
        data={
            "csrf_token": token,
            "name": "uploaded",
            "image": "neurondock/pytorch-inference:latest",
            "model_file": (io.BytesIO(b"PK\x03\x04 pretend torchscript"), "model.pt"),
        },
        content_type="multipart/form-data",
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    page = console.get("/console/models/uploaded").get_data(as_text=True)
    url = f"s3://nd-artifacts-{ACCOUNT_ID}/models/uploaded/model.tar.gz"
    assert url in page
    from neurondock_platform.services.objects import ObjectStore

    data = ObjectStore(settings.objects_dir).get_object(f"nd-artifacts-{ACCOUNT_ID}", "models/uploaded/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert tar.getnames() == ["model.pt"]
    bad = console.post(
        "/console/models",
        data={"csrf_token": token, "name": "bad", "image": "x", "model_file": (io.BytesIO(b"x"), "notes.txt")},
        content_type="multipart/form-data",
    )
    assert bad.status_code == 400 and "TorchScript" in bad.get_data(as_text=True)


def test_json_helpers_of_the_endpoint_page(console, world, settings):
    rid = world("e1", instance_type="ml.c5.large")["replica_ids"][0]
    log = settings.replicas_dir / str(rid) / "replica.log"
    log.parent.mkdir(parents=True)
    log.write_text("hello\n")
    logs = console.get("/console/endpoints/e1/logs.json").get_json()
    assert logs["replicas"][0]["lines"] == ["hello"]
    metrics = console.get("/console/endpoints/e1/metrics.json?metric=ModelLatency&stat=p50").get_json()
    assert metrics["available"] is True and metrics["points"] == []
    assert console.get("/console/endpoints/e1/metrics.json?metric=Bogus").status_code == 400


def test_invoke_goes_through_the_runtime_as_the_signed_in_account(console, world, monkeypatch):
    from neurondock_platform.console import _endpoints

    world("e1", instance_type="ml.c5.large")
    seen = {}

    class FakeResponse:
        status = 200
        headers = {"Content-Type": "application/json", "X-Amzn-Invoked-Production-Variant": "AllTraffic"}

        def read(self):
            return b"[[1.0, 2.0]]"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(req, timeout):
        seen["url"], seen["auth"], seen["body"] = req.full_url, req.headers.get("Authorization"), req.data
        return FakeResponse()

    monkeypatch.setattr(_endpoints.urllib.request, "urlopen", fake_urlopen)
    token = page_csrf(console, "/console/endpoints/e1")
    resp = console.post(
        "/console/endpoints/e1/invoke",
        data={"body": "[[0.5]]", "content_type": "application/json"},
        headers={"X-CSRF-Token": token},
    )
    result = resp.get_json()
    assert result["status"] == 200 and result["body"] == "[[1.0, 2.0]]" and result["invoked_variant"] == "AllTraffic"
    assert seen["url"].endswith("/endpoints/e1/invocations") and seen["body"] == b"[[0.5]]"
    assert f"Credential={ACCESS_KEY}/" in seen["auth"]


def test_accounts_page_is_for_admins(console, client, tenant):
    token = page_csrf(console, "/console/accounts")
    resp = console.post("/console/accounts", data={"csrf_token": token, "name": "team-b"})
    assert resp.status_code == 201 and "not shown again" in resp.get_data(as_text=True)
    console.post("/console/sign-out", data={"csrf_token": token})
    assert console.get("/console/endpoints").status_code == 302
    sign_in(client, tenant.access_key, tenant.secret_key)
    assert client.get("/console/accounts").status_code == 403
    assert "Accounts</a>" not in client.get("/console/endpoints").get_data(as_text=True)


def test_disabling_a_key_ends_its_console_sessions(client, api, tenant):
    sign_in(client, tenant.access_key, tenant.secret_key)
    assert client.get("/console/endpoints").status_code == 200
    api.ok("POST", f"/access-keys/{tenant.access_key}/disable")
    assert client.get("/console/endpoints").status_code == 302
