"""CLI fixtures: one live ``neurondock up`` per module (SQLite, embedded broker) and a CliRunner bound to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result
from tests.support.platform import Platform, running_platform


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    # A one-second metrics flush: `endpoints errors` reads what the data plane has written.
    yield from running_platform(tmp_path_factory.mktemp("nd-cli"), extra_env={"NEURONDOCK_METRICS_FLUSH_SECONDS": "1"})


@pytest.fixture(scope="module")
def cli_env(platform) -> dict[str, str]:
    """The environment `neurondock up` tells users to export."""
    return platform.cli_env()


@pytest.fixture(scope="module")
def cli(cli_env) -> Callable[..., Result]:
    """Run ``neurondock <args>`` in process against the live platform."""
    from neurondock_platform.cli import main

    def run(*args: str, env: dict[str, str | None] | None = None, input: Any = None) -> Result:
        runner = CliRunner()
        merged: dict[str, str | None] = {**cli_env, **(env or {})}
        return runner.invoke(main, list(args), env=merged, input=input, catch_exceptions=False)

    return run
