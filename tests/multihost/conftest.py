"""The namespaced fleet's fixtures; every test here needs root, ip netns, PostgreSQL and Redis binaries."""

from __future__ import annotations

import pytest

from tests.multihost.fleet import Fleet, FleetSpec, missing_servers
from tests.multihost.netns import leftovers, unavailable_reason


def pytest_collection_modifyitems(config, items):
    reason = None
    for item in items:
        if "tests/multihost/" not in str(item.path).replace("\\", "/"):
            continue
        item.add_marker(pytest.mark.multihost)
        if reason is None:
            reason = unavailable_reason() or missing_servers() or ""
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"namespaced fleet unavailable: {reason}"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A module's fleet of two APIs and three hosts; nothing of it may be left behind afterwards."""
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), FleetSpec(apis=2, hosts=3))
    try:
        fleet.start()
        yield fleet
    finally:
        tag = fleet.net.tag
        fleet.close()
        assert leftovers(tag) == []
