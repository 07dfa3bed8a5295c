"""The namespaced fleet's smoke (default run): two API processes and two worker hosts on their own network
namespaces, with their own PostgreSQL, Redis and S3 store; an endpoint spread over both hosts serves
through both APIs, and nothing of the fleet is left behind afterwards."""

from __future__ import annotations

from tests.multihost.deploy import create_endpoint, invoke, upload_model
from tests.multihost.fleet import Fleet, FleetSpec
from tests.multihost.netns import leftovers


def test_two_apis_serve_an_endpoint_spread_over_two_hosts(tmp_path):
    fleet = Fleet(tmp_path / "fleet", FleetSpec(apis=2, hosts=2))
    try:
        fleet.start()
        name = create_endpoint(fleet.client("sagemaker", api=2), upload_model(fleet, tmp_path), count=2)
        placed = fleet.replicas(name)
        assert {r["host_id"] for r in placed} == {"host-h1", "host-h2"}, placed
        # Each replica listens on its host's own address, which only the bridge reaches.
        assert {r["address"].rpartition(":")[0] for r in placed} == {
            fleet.net.nodes["h1"].address,
            fleet.net.nodes["h2"].address,
        }
        answers = [invoke(fleet.client("sagemaker-runtime", api=i), name) for i in (1, 2) for _ in range(4)]
        assert all(a == answers[0] for a in answers) and len(answers[0][0]) == 4
    finally:
        tag = fleet.net.tag
        fleet.close()
    assert leftovers(tag) == []
