"""Control-plane fixtures: call helpers that assert the status, resource builders, a second account."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.integration.control_plane.cp_helpers import ENV, IMAGE, MODEL_DATA, ROLE, variant


@pytest.fixture
def ok(sagemaker) -> Callable[..., dict[str, Any]]:
    """Call an operation and assert HTTP 200; return the body."""

    def call(operation: str, params: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        status, body = sagemaker(operation, params or {}, **kw)
        assert status == 200, (operation, body)
        return body

    return call


@pytest.fixture
def fails(sagemaker) -> Callable[..., str]:
    """Call an operation, assert a 400 with the given code; return the message."""

    def call(operation: str, params: dict[str, Any], code: str = "ValidationException", **kw: Any) -> str:
        status, body = sagemaker(operation, params, **kw)
        assert status == 400, (operation, status, body)
        assert body["__type"] == code, body
        message: str = body["message"]
        return message

    return call


@pytest.fixture
def make_model(ok) -> Callable[..., str]:
    def create(name: str = "m1", **overrides: Any) -> str:
        params: dict[str, Any] = {
            "ModelName": name,
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": MODEL_DATA, "Environment": ENV},
        }
        params.update(overrides)
        arn_: str = ok("CreateModel", params)["ModelArn"]
        return arn_

    return create


@pytest.fixture
def make_config(ok) -> Callable[..., str]:
    def create(name: str = "c1", variants: list[dict[str, Any]] | None = None, **overrides: Any) -> str:
        params: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": variants or [variant()]}
        params.update(overrides)
        arn_: str = ok("CreateEndpointConfig", params)["EndpointConfigArn"]
        return arn_

    return create


@pytest.fixture
def deployed(make_model, make_config, ok) -> Callable[..., str]:
    """Create model m1 (if needed), a config and an endpoint; return the endpoint ARN."""

    def create(name: str = "e1", config: str = "c1", **overrides: Any) -> str:
        status = ok("ListModels", {"NameContains": "m1"})
        if not any(m["ModelName"] == "m1" for m in status["Models"]):
            make_model("m1")
        make_config(config)
        params = {"EndpointName": name, "EndpointConfigName": config, **overrides}
        arn_: str = ok("CreateEndpoint", params)["EndpointArn"]
        return arn_

    return create


@pytest.fixture
def db(session_factory) -> Callable[..., Any]:
    """Run ``fn(session)`` in a committed unit of work and return its result."""
    from neurondock_platform.db import session_scope

    def run(fn: Callable[[Any], Any]) -> Any:
        with session_scope(session_factory) as session:
            return fn(session)

    return run


@pytest.fixture
def endpoint_row(db) -> Callable[..., Any]:
    """Change an endpoint row the way the reconciler would: ``endpoint_row("e1", status=..., ...)``."""
    from sqlalchemy import select

    from neurondock_platform.models import Endpoint

    def change(name: str, fn: Callable[[Any], None] | None = None, **fields: Any) -> None:
        def apply(session: Any) -> None:
            endpoint = session.scalar(select(Endpoint).where(Endpoint.name == name))
            for key, value in fields.items():
                setattr(endpoint, key, value)
            if fn is not None:
                fn(endpoint)

        db(apply)

    return change


@pytest.fixture
def in_service(endpoint_row) -> Callable[[str], None]:
    """Mark an endpoint InService with its instances running, as the reconciler does."""
    from neurondock_platform.models import EndpointStatus

    def mark(name: str = "e1") -> None:
        def run(endpoint: Any) -> None:
            for v in endpoint.variants:
                v.current_instance_count = v.desired_instance_count
                v.current_weight = v.desired_weight
                v.variant_status = None
                v.extra = {
                    "deployed_images": [
                        {
                            "SpecifiedImage": v.container["Image"],
                            "ResolvedImage": v.container["Image"] + "@sha256:" + "0" * 64,
                            "ResolutionTime": 1_700_000_000.5,
                        }
                    ]
                }

        endpoint_row(name, run, status=EndpointStatus.IN_SERVICE)

    return mark


@pytest.fixture
def other_account(db) -> dict[str, str]:
    """A second account with its own key: sign with ``**other_account`` minus account_id."""
    from neurondock_platform.services.accounts import create_account

    def create(session: Any) -> dict[str, str]:
        account, key = create_account(session, "other")
        return {
            "account_id": account.id,
            "access_key": key.access_key_id,
            "secret_key": key.secret_access_key,
        }

    created: dict[str, str] = db(create)
    return created


@pytest.fixture
def as_other(other_account) -> dict[str, str]:
    """Signing kwargs for the second account."""
    return {"access_key": other_account["access_key"], "secret_key": other_account["secret_key"]}


@pytest.fixture
def sm(app) -> Iterator[Any]:
    """Unmodified boto3's SageMaker client, talking to the app served on a loopback port."""
    import boto3
    from botocore.config import Config
    from tests.conftest import ACCESS_KEY, SECRET_KEY
    from tests.support.services import wsgi_server

    with wsgi_server(app) as url:
        yield boto3.client(
            "sagemaker",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(retries={"max_attempts": 1}),
        )
