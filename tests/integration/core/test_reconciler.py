"""The endpoint reconciler against a real database, with the host agent played by a fake."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import select
from tests.conftest import ACCOUNT_ID

from neurondock_platform.db import session_scope, utcnow
from neurondock_platform.models import Endpoint, EndpointStatus, EndpointVariant, Host, Replica, ReplicaState
from neurondock_platform.services.reconciler import ReconcileOptions, reconcile_endpoint

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeAgent:
    """Plays every host agent: each 'sleep' of the reconciler is one agent pass."""

    def __init__(self, factory, clock: FakeClock, *, fail: bool = False, hosts: tuple[str, ...] = ("h1",)) -> None:
        self.factory, self.clock, self.fail, self.hosts = factory, clock, fail, hosts
        self.passes = 0

    def __call__(self, seconds: float) -> None:
        self.clock.now += seconds
        self.passes += 1
        with session_scope(self.factory) as session:
            for host in session.scalars(select(Host).where(Host.id.in_(self.hosts))):
                host.last_heartbeat = utcnow()
            for r in session.scalars(select(Replica).where(Replica.host_id.in_(self.hosts))):
                if r.desired_state == "stopped":
                    r.state = ReplicaState.STOPPED
                elif self.fail:
                    r.state, r.failure_reason, r.pid = ReplicaState.FAILED, "model_fn raised: boom", 42
                    r.log_tail = "Traceback...\nRuntimeError: boom"
                else:
                    r.state, r.address, r.pid = ReplicaState.READY, f"127.0.0.1:{9000 + r.id}", 42


def add_hosts(factory, chips=(16,)) -> None:
    with session_scope(factory) as session:
        for i, c in enumerate(chips, start=1):
            session.add(Host(id=f"h{i}", address="127.0.0.1", chips=c))


_ids = itertools.count()


def add_endpoint(factory, *, instance_type="ml.c5.large", count=1, image=IMAGE, status=EndpointStatus.CREATING) -> int:
    n = next(_ids)
    with session_scope(factory) as session:
        ep = Endpoint(
            account_id=ACCOUNT_ID,
            name=f"ep{n}",
            arn=f"arn:ep{n}",
            endpoint_config_name=f"c{n}",
            status=status,
        )
        ep.variants.append(
            EndpointVariant(
                name="AllTraffic",
                model_name="m",
                instance_type=instance_type,
                desired_instance_count=count,
                container={"Image": image, "ModelDataUrl": "s3://b/k"},
            )
        )
        session.add(ep)
        session.flush()
        return ep.id


def run(factory, endpoint_id, agent, clock, **opts):
    return reconcile_endpoint(factory, endpoint_id, ReconcileOptions(**opts), clock=clock, sleep=agent)


def test_creating_becomes_in_service_with_all_replicas(session_factory):
    add_hosts(session_factory)
    clock = FakeClock()
    agent = FakeAgent(session_factory, clock)
    agent(0)  # first heartbeat
    eid = add_endpoint(session_factory, count=3)
    assert run(session_factory, eid, agent, clock) == "InService"
    with session_scope(session_factory) as s:
        ep = s.get(Endpoint, eid)
        assert ep.status == EndpointStatus.IN_SERVICE and ep.failure_reason is None
        v = ep.variants[0]
        assert (v.current_instance_count, v.current_weight) == (3, 1.0)
        assert v.extra["deployed_images"][0]["SpecifiedImage"] == IMAGE
        assert len(s.scalars(select(Replica).where(Replica.endpoint_id == eid)).all()) == 3
    # Idempotent: a second pass changes nothing and ends InService.
    assert run(session_factory, eid, agent, clock) == "InService"


def test_failing_replica_fails_endpoint_with_reason_and_logs(session_factory):
    add_hosts(session_factory)
    clock = FakeClock()
    agent = FakeAgent(session_factory, clock, fail=True)
    agent(0)
    eid = add_endpoint(session_factory)
    assert run(session_factory, eid, agent, clock) == "failed"
    with session_scope(session_factory) as s:
        ep = s.get(Endpoint, eid)
        assert ep.status == EndpointStatus.FAILED
        assert "did not pass the ping health check: model_fn raised: boom" in ep.failure_reason
        assert "RuntimeError: boom" in ep.failure_reason
        assert all(r.desired_state == "stopped" for r in s.scalars(select(Replica)))


def test_unsupported_image_fails_before_placing(session_factory):
    add_hosts(session_factory)
    clock = FakeClock()
    agent = FakeAgent(session_factory, clock)
    agent(0)
    eid = add_endpoint(session_factory, image="docker.io/library/nginx:latest")
    assert run(session_factory, eid, agent, clock) == "failed"
    with session_scope(session_factory) as s:
        assert "is not supported by neurondock" in s.get(Endpoint, eid).failure_reason
        assert s.scalars(select(Replica)).all() == []


def test_no_live_host_fails_with_capacity_reason(session_factory):
    clock = FakeClock()
    agent = FakeAgent(session_factory, clock, hosts=())
    eid = add_endpoint(session_factory)
    assert run(session_factory, eid, agent, clock, capacity_wait=1.0) == "failed"
    with session_scope(session_factory) as s:
        assert "InsufficientInstanceCapacity" in s.get(Endpoint, eid).failure_reason


def test_inf1_instances_need_their_chips_on_one_host(session_factory):
    add_hosts(session_factory, chips=(2, 2))
    clock = FakeClock()
    agent = FakeAgent(session_factory, clock, hosts=("h1", "h2"))
    agent(0)
    too_big = add_endpoint(session_factory, instance_type="ml.inf1.6xlarge")
    assert run(session_factory, too_big, agent, clock, capacity_wait=0.5) == "failed"
    spread = add_endpoint(session_factory, instance_type="ml.inf1.xlarge", count=2)
    assert run(session_factory, spread, agent, clock) == "InService"
    with session_scope(session_factory) as s:
        rows = s.scalars(select(Replica).where(Replica.endpoint_id == spread)).all()
        by_instance = {}
        for r in rows:
            by_instance.setdefault(r.extra["instance"], set()).add(r.host_id)
        # One replica per NeuronCore: 4 per ml.inf1.xlarge, all of an instance on one host.
        assert len(rows) == 8
        assert sorted(h for hosts in by_instance.values() for h in hosts) == ["h1", "h2"]
        assert sorted(tuple(r.extra["cores"]) for r in rows if r.host_id == "h1") == [(0,), (1,), (2,), (3,)]


def test_deleting_stops_replicas_then_removes_the_endpoint(session_factory):
    add_hosts(session_factory)
    clock = FakeClock()
    agent = FakeAgent(session_factory, clock)
    agent(0)
    eid = add_endpoint(session_factory, count=2)
    assert run(session_factory, eid, agent, clock) == "InService"
    with session_scope(session_factory) as s:
        ep = s.get(Endpoint, eid)
        ep.status, ep.generation = EndpointStatus.DELETING, ep.generation + 1
    assert run(session_factory, eid, agent, clock) == "deleted"
    with session_scope(session_factory) as s:
        assert s.get(Endpoint, eid) is None
        assert s.scalars(select(Replica)).all() == []
    assert run(session_factory, eid, agent, clock) == "gone"


def test_a_newer_generation_supersedes_a_waiting_pass(session_factory):
    add_hosts(session_factory)
    clock = FakeClock()
    eid = add_endpoint(session_factory)

    def bump_then_agent(seconds: float) -> None:
        with session_scope(session_factory) as s:
            s.get(Endpoint, eid).generation += 1
        FakeAgent(session_factory, clock)(seconds)

    FakeAgent(session_factory, clock)(0)
    assert run(session_factory, eid, bump_then_agent, clock) == "superseded"


@pytest.mark.parametrize("count", [1, 2])
def test_scale_down_stops_extra_replicas(session_factory, count):
    add_hosts(session_factory)
    clock = FakeClock()
    agent = FakeAgent(session_factory, clock)
    agent(0)
    eid = add_endpoint(session_factory, count=3)
    assert run(session_factory, eid, agent, clock) == "InService"
    with session_scope(session_factory) as s:
        ep = s.get(Endpoint, eid)
        ep.variants[0].desired_instance_count = count
        ep.status, ep.generation = EndpointStatus.UPDATING, ep.generation + 1
    assert run(session_factory, eid, agent, clock) == "InService"
    agent(0)
    assert run(session_factory, eid, agent, clock) == "InService"
    with session_scope(session_factory) as s:
        running = s.scalars(select(Replica).where(Replica.desired_state == "running")).all()
        assert len(running) == count
        assert s.get(Endpoint, eid).variants[0].current_instance_count == count


def _env_endpoint(factory, instance_type, env, count=1):
    eid = add_endpoint(factory, instance_type=instance_type, count=count)
    with session_scope(factory) as s:
        v = s.get(Endpoint, eid).variants[0]
        v.container = {**v.container, "Environment": env}
    return eid


def test_neuron_rt_num_cores_groups_cores_per_replica(session_factory):
    add_hosts(session_factory)
    clock = FakeClock()
    agent = FakeAgent(session_factory, clock)
    agent(0)
    eid = _env_endpoint(session_factory, "ml.inf1.xlarge", {"NEURON_RT_NUM_CORES": "2"})
    assert run(session_factory, eid, agent, clock) == "InService"
    with session_scope(session_factory) as s:
        cores = sorted(tuple(r.extra["cores"]) for r in s.scalars(select(Replica).where(Replica.endpoint_id == eid)))
        assert cores == [(0, 1), (2, 3)]


def test_more_cores_than_the_instance_has_fails_with_nrt_wording(session_factory):
    add_hosts(session_factory)
    clock = FakeClock()
    agent = FakeAgent(session_factory, clock)
    agent(0)
    eid = _env_endpoint(session_factory, "ml.inf1.xlarge", {"NEURON_RT_NUM_CORES": "8"})
    assert run(session_factory, eid, agent, clock) == "failed"
    with session_scope(session_factory) as s:
        assert "NeuronCore(s) not available - Requested:8 Available:4" in s.get(Endpoint, eid).failure_reason


def test_model_server_workers_run_several_replicas_per_cpu_instance(session_factory):
    add_hosts(session_factory)
    clock = FakeClock()
    agent = FakeAgent(session_factory, clock)
    agent(0)
    eid = _env_endpoint(session_factory, "ml.c5.xlarge", {"SAGEMAKER_MODEL_SERVER_WORKERS": "3"}, count=2)
    assert run(session_factory, eid, agent, clock) == "InService"
    with session_scope(session_factory) as s:
        rows = s.scalars(select(Replica).where(Replica.endpoint_id == eid)).all()
        layout = sorted((r.extra["instance"], r.extra["group"]) for r in rows)
        assert layout == [(i, g) for i in (0, 1) for g in range(3)]
        assert all("cores" not in r.extra for r in rows)
    # More workers than the instance has vCPUs (ml.c5.large: 2) fails before anything starts.
    bad = _env_endpoint(session_factory, "ml.c5.large", {"SAGEMAKER_MODEL_SERVER_WORKERS": "3"})
    assert run(session_factory, bad, agent, clock) == "failed"
    with session_scope(session_factory) as s:
        assert "SAGEMAKER_MODEL_SERVER_WORKERS must be an integer from 1 to 2" in s.get(Endpoint, bad).failure_reason


def test_instances_get_adjacent_chips_and_global_core_ids(session_factory):
    add_hosts(session_factory, chips=(16,))
    clock = FakeClock()
    agent = FakeAgent(session_factory, clock)
    agent(0)
    eid = _env_endpoint(session_factory, "ml.inf1.6xlarge", {"NEURON_RT_NUM_CORES": "0"}, count=2)
    assert run(session_factory, eid, agent, clock) == "InService"
    with session_scope(session_factory) as s:
        rows = s.scalars(select(Replica).where(Replica.endpoint_id == eid)).all()
        assert sorted(tuple(r.extra["chips"]) for r in rows) == [(0, 1, 2, 3), (4, 5, 6, 7)]
        assert sorted(r.extra["cores"][0] for r in rows) == [0, 16]


def test_two_passes_placing_the_same_endpoint_at_once_start_each_replica_once(session_factory, monkeypatch):
    from neurondock_platform.services import reconciler

    add_hosts(session_factory)
    clock = FakeClock()
    agent = FakeAgent(session_factory, clock)
    agent(0)
    eid = add_endpoint(session_factory, count=2)
    real_extra, raced = reconciler._group_extra, []

    def other_pass_commits_first(*args, **kwargs):
        # This pass has read the variant's rows and is about to insert: the other pass places and commits now.
        if not raced:
            raced.append(True)
            with session_scope(session_factory) as other:
                reconciler._place(other, other.get(Endpoint, eid), ReconcileOptions())
        return real_extra(*args, **kwargs)

    monkeypatch.setattr(reconciler, "_group_extra", other_pass_commits_first)
    assert run(session_factory, eid, agent, clock) == "InService"
    with session_scope(session_factory) as s:
        ordinals = sorted(r.ordinal for r in s.scalars(select(Replica).where(Replica.endpoint_id == eid)))
    assert raced and ordinals == [0, 1]
