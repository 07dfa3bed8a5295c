"""A failed UpdateEndpoint rolls the endpoint's live capture config back with its variants."""

from __future__ import annotations

from sqlalchemy import select
from tests.integration.core.test_reconciler import IMAGE, FakeAgent, FakeClock, add_endpoint, add_hosts, run

from neurondock_platform.db import session_scope, utcnow
from neurondock_platform.models import Endpoint, EndpointStatus, Replica, ReplicaState
from neurondock_platform.services import endpoint_status, endpoints

OLD = {"InitialSamplingPercentage": 30, "DestinationS3Uri": "s3://b/old", "CaptureOptions": [{"CaptureMode": "Input"}]}


class FailNewReplicas(FakeAgent):
    """Replicas of the new image never come up; the old fleet keeps running."""

    def __call__(self, seconds: float) -> None:
        super().__call__(seconds)
        with session_scope(self.factory) as session:
            for r in session.scalars(select(Replica).where(Replica.desired_state == "running")):
                variant = next(v for v in session.get(Endpoint, r.endpoint_id).variants if v.id == r.variant_id)
                if variant.container.get("Image") == "img:broken":
                    r.state, r.failure_reason, r.pid = ReplicaState.FAILED, "model_fn raised: boom", 42


def test_a_rolled_back_update_restores_the_old_capture_config(session_factory):
    add_hosts(session_factory)
    clock = FakeClock()
    agent = FailNewReplicas(session_factory, clock)
    agent(0)
    eid = add_endpoint(session_factory)
    assert run(session_factory, eid, agent, clock) == "InService"
    with session_scope(session_factory) as session:
        endpoint = session.get(Endpoint, eid)
        new = endpoints.VariantSpec("AllTraffic", "m2", "ml.c5.large", 1, 1.0, {"Image": "img:broken"})
        pending = {
            "EndpointConfigName": "c-new",
            "StartTime": utcnow().timestamp(),
            "ProductionVariants": [new.to_json()],
            "ConfigEcho": {},  # the new config captures nothing
            "DeploymentConfig": None,
        }
        endpoint.extra = {**endpoint.extra, "DataCaptureConfig": OLD, "pending": pending}
        endpoint.generation += 1
        endpoint_status.transition(session, endpoint, EndpointStatus.UPDATING, "UpdateEndpoint")
    outcome = run(session_factory, eid, agent, clock)
    for _ in range(3):
        if outcome == "InService":
            break
        outcome = run(session_factory, eid, agent, clock)
    with session_scope(session_factory) as session:
        endpoint = session.get(Endpoint, eid)
        assert endpoint.status == EndpointStatus.IN_SERVICE and endpoint.failure_reason, outcome
        assert endpoint.endpoint_config_name != "c-new"
        assert endpoint.variants[0].container["Image"] == IMAGE
        assert endpoint.extra.get("DataCaptureConfig") == OLD
