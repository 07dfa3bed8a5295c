"""The OpenAPI document matches the server: every route documented, valid, and fuzzed without a 5xx."""

from __future__ import annotations

import re

import pytest
from tests.conftest import ACCESS_KEY, ACCOUNT_ID, SECRET_KEY
from tests.integration.admin.admin_helpers import spec

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install schemathesis)")
hypothesis = pytest.importorskip("hypothesis")

from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

FUZZ_EXAMPLES = 6


def _routes(app) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint == "admin_api.unknown_route":
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule[len("/api/v1") :])
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            found.add((method.lower(), path))
    return found


def test_every_route_is_documented_and_every_documented_route_exists(app):
    routes = _routes(app)
    documented = {
        (method, path)
        for path, item in spec()["paths"].items()
        for method in item
        if method in {"get", "post", "put", "delete", "patch"}
    }
    assert routes - documented == set(), "routes missing from openapi.json"
    assert documented - routes == set(), "documented operations the server does not have"


def test_the_document_is_valid_openapi_and_served_at_its_url(client):
    from openapi_spec_validator import validate

    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200
    doc = resp.get_json()
    validate(doc)
    assert doc["openapi"].startswith("3.")
    assert doc["servers"] == [{"url": "http://127.0.0.1:8780/api/v1"}]


@pytest.fixture
def fuzz_app(tmp_path):
    """One SQLite-backed app with a few resources (the fuzz run stays short: SQLite only)."""
    from neurondock_platform import models  # noqa: F401
    from neurondock_platform.app import create_app
    from neurondock_platform.config import Settings
    from neurondock_platform.db import Base, make_engine, make_sessionmaker, session_scope
    from neurondock_platform.dispatch import RecordingDispatcher
    from neurondock_platform.models import Host
    from neurondock_platform.services import artifacts, deploy
    from neurondock_platform.services.accounts import create_account, ensure_root_account, root_identity

    settings = Settings.from_env(
        {},
        data_dir=tmp_path / "nd",
        root_access_key_id=ACCESS_KEY,
        root_secret_access_key=SECRET_KEY,
        account_id=ACCOUNT_ID,
        host_id="host-test",
    )
    settings.data_dir.mkdir(parents=True)
    engine = make_engine(settings.database_url)
    Base.metadata.create_all(engine)
    factory = make_sessionmaker(engine)
    # Resources named as the document's examples, so the explicit phase reaches real rows.
    with session_scope(factory) as session:
        ensure_root_account(session, root_identity(settings))
        create_account(session, "tenant")
        session.add(Host(id="host-1", address="127.0.0.1", chips=4, vcpus=2, memory_mb=4096))
        deploy.create_model(
            session,
            account_id=ACCOUNT_ID,
            region="us-east-1",
            name="my-model",
            image="neurondock/pytorch-inference:latest",
            model_data_url="s3://nd-artifacts-123456789012/models/model.tar.gz",
        )
        deploy.deploy_model(
            session,
            account_id=ACCOUNT_ID,
            region="us-east-1",
            name="my-endpoint",
            model_name="my-model",
            instance_type="ml.inf1.xlarge",
            config_name="my-endpoint-config",
        )
        artifacts.put_artifact(
            session,
            settings,
            account_id=ACCOUNT_ID,
            bucket="nd-artifacts-123456789012",
            key="models/model.tar.gz",
            body=b"not really a model",
        )
    app = create_app(settings, session_factory=factory, dispatcher=RecordingDispatcher())
    yield app
    engine.dispose()


@pytest.fixture
def bearer() -> str:
    from neurondock_platform.services import sessions
    from neurondock_platform.sigv4 import Credential

    return sessions.issue_token(ACCESS_KEY, Credential(SECRET_KEY, ACCOUNT_ID)).value


def test_fuzzed_requests_never_get_a_5xx_and_answers_match_the_document(fuzz_app, bearer):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzz_app)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 40
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        def call(case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {bearer}"}, checks=checks)

        call()
