"""A live platform per backend combination: SQLite + embedded broker, PostgreSQL + Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import services
from tests.support.platform import Platform, running_platform

BACKENDS = [
    pytest.param(("sqlite", "embedded"), id="sqlite-embedded"),
    pytest.param(("postgres", "redis"), id="postgres-redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
]
# Modules marked with this run on both backends; the others on SQLite + the embedded broker only,
# which keeps the default suite inside its time budget.
BOTH_BACKENDS = pytest.mark.parametrize("platform", BACKENDS, indirect=True, scope="module")
# In a both-backends module, a test whose outcome no backend changes (the wire, the compiler, error
# texts) runs on PostgreSQL + Redis only in the slow run.
BACKEND_NEUTRAL = pytest.mark.backend_neutral


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("backend_neutral") and "postgres-redis" in item.name:
            item.add_marker(pytest.mark.slow)


def _endpoint_names(plat: Platform) -> set[str]:
    pages = plat.client("sagemaker").get_paginator("list_endpoints").paginate()
    return {e["EndpointName"] for page in pages for e in page["Endpoints"]}


@pytest.fixture(scope="session")
def shared_platform(tmp_path_factory) -> Iterator[Platform]:
    """One SQLite + embedded-broker platform for every e2e module that needs no setting of its own."""
    yield from running_platform(tmp_path_factory.mktemp("nd-e2e"))


@pytest.fixture(scope="module")
def platform(request, tmp_path_factory) -> Iterator[Platform]:
    database, broker = getattr(request, "param", ("sqlite", "embedded"))
    if database == "sqlite":
        # Starting a platform per module cost about 5 s each; the modules share one instead, and
        # each deletes the endpoints it left so that the next one starts without their replicas.
        plat = request.getfixturevalue("shared_platform")
        before = _endpoint_names(plat)
        yield plat
        if plat.ping():
            sm = plat.client("sagemaker")
            for name in _endpoint_names(plat) - before:
                sm.delete_endpoint(EndpointName=name)
        return
    data_dir = tmp_path_factory.mktemp("nd-e2e")
    if database == "postgres" and not services.postgres_available():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432; skipping the PostgreSQL + Redis run")
    if broker == "redis" and not services.redis_available():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379; skipping the PostgreSQL + Redis run")
    with services.fresh_postgres_database() as url:
        yield from running_platform(data_dir, database_url=url, broker_url=services.fresh_redis_url())


@pytest.fixture(scope="module")
def sm(platform):
    return platform.client("sagemaker")


@pytest.fixture(scope="module")
def rt(platform):
    return platform.client("sagemaker-runtime")


@pytest.fixture(scope="module")
def s3(platform):
    return platform.client("s3")


@pytest.fixture(scope="module")
def bucket(s3) -> str:
    name = "nd-e2e-models"
    s3.create_bucket(Bucket=name)
    return name
