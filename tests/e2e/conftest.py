"""A live platform per backend combination: SQLite + embedded broker, PostgreSQL + Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import services
from tests.support.platform import Platform

BACKENDS = [
    pytest.param(("sqlite", "embedded"), id="sqlite-embedded"),
    pytest.param(("postgres", "redis"), id="postgres-redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
]
# Modules marked with this run on both backends; the others on SQLite + the embedded broker only,
# which keeps the default suite inside its time budget.
BOTH_BACKENDS = pytest.mark.parametrize("platform", BACKENDS, indirect=True, scope="module")


@pytest.fixture(scope="module")
def platform(request, tmp_path_factory) -> Iterator[Platform]:
    database, broker = getattr(request, "param", ("sqlite", "embedded"))
    data_dir = tmp_path_factory.mktemp("nd-e2e")
    if database == "postgres" and not services.postgres_available():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432; skipping the PostgreSQL + Redis run")
    if broker == "redis" and not services.redis_available():
        pytest.skip("Redis is not reachable at 127.0.0.1:6379; skipping the PostgreSQL + Redis run")
    if database == "postgres":
        with services.fresh_postgres_database() as url:
            plat = Platform(data_dir, database_url=url, broker_url=services.fresh_redis_url())
            plat.start()
            try:
                yield plat
            finally:
                plat.stop()
    else:
        plat = Platform(data_dir)
        plat.start()
        try:
            yield plat
        finally:
            plat.stop()


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
