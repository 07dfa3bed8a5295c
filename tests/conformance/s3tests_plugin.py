"""A pytest plugin loaded into ceph's s3-tests by ``run_s3_tests``: it gives the suite's boto3 clients the
store's path prefix (the suite only knows host and port), gives it to the one raw socket request the suite
builds itself (``test_100_continue``), and records each test's markers and outcome.

It is imported by s3-tests' own pytest (``-p s3tests_plugin``), never by neurondock's test suite.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

_results: dict[str, dict[str, Any]] = {}


def pytest_configure(config: pytest.Config) -> None:
    import s3tests.functional as functional  # the suite's package, on its own sys.path

    original = functional.configure
    prefix = os.environ["S3TEST_PATH_PREFIX"]

    def configure() -> None:
        original()
        functional.config.default_endpoint += prefix

    functional.configure = configure


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Prefix the resource of the suite's hand-written ``Expect: 100-continue`` request with the store's path."""
    prefix = os.environ["S3TEST_PATH_PREFIX"]
    for module in {item.module for item in items if isinstance(item, pytest.Function) and item.module is not None}:
        original = getattr(module, "_simple_http_req_100_cont", None)
        if original is None or getattr(original, "prefixed", False):
            continue

        def prefixed(host: str, port: int, is_secure: bool, method: str, resource: str, _send: Any = original) -> Any:
            return _send(host, port, is_secure, method, prefix + resource)

        prefixed.prefixed = True  # type: ignore[attr-defined]
        module._simple_http_req_100_cont = prefixed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    entry = _results.setdefault(
        item.nodeid,
        {"name": item.name, "markers": sorted({m.name for m in item.iter_markers()}), "outcome": "passed"},
    )
    if report.failed:
        entry["outcome"] = "failed" if report.when == "call" else "error"
        entry["detail"] = str(report.longrepr)[-3000:]
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"
        entry["detail"] = str(report.longrepr)[-500:]


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("S3TEST_RESULTS")
    if path:
        with open(path, "w") as f:
            json.dump(_results, f, indent=1)
