"""The host agent's state machine, with ReplicaProcess swapped for a fake (no processes, no torch)."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import update
from tests.support.waiting import wait_for

import neurondock_platform.models as m
from neurondock_platform.config import Settings
from neurondock_platform.db import Base, make_engine, make_sessionmaker, session_scope
from neurondock_platform.lifetime import pid_alive
from neurondock_platform.models import ReplicaState
from neurondock_workers.hosting import process, standby
from neurondock_workers.hosting.agent import AgentConflictError, HostAgent, ReplicaProcess, ReplicaStartError
from neurondock_workers.hosting.s3 import ObjectHead, StoreError
from neurondock_workers.hosting.standby import StandbyPool

URL = "s3://models/tiny/model.tar.gz"
HOST_ID = "host-unit"


class FakeS3:
    def __init__(self, owner: Any = None) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            info = tarfile.TarInfo("model.pth")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"w"))
        self.data = buffer.getvalue()

    def head(self, bucket: str, key: str) -> ObjectHead:
        return ObjectHead(hashlib.md5(self.data).hexdigest(), None, len(self.data))

    def get(self, bucket: str, key: str) -> io.BytesIO:
        body = io.BytesIO(self.data)
        body.length = len(self.data)  # type: ignore[attr-defined]
        return body


class FakeProcess(ReplicaProcess):
    """Plays a replica process: ``behaviour`` decides what wait_ready does."""

    behaviour: ClassVar[str] = "ready"
    instances: ClassVar[list[FakeProcess]] = []
    stale_kills: ClassVar[list[tuple[int, Path]]] = []
    _pids = itertools.count(10_000)

    @classmethod
    def head_start(cls, *args: Any, **kwargs: Any) -> None:
        return None  # no interpreter: start() plays the process

    def start(self, head: Any = None) -> int:
        self.fake_pid = next(self._pids)
        self.running = True
        self.terminated = False
        self.timeout: float | None = None
        self.instances.append(self)
        return self.fake_pid

    @property
    def pid(self) -> int | None:
        return getattr(self, "fake_pid", None)

    @property
    def returncode(self) -> int | None:
        return None if self.running else -9

    def wait_ready(self, timeout: float, cancel: threading.Event | None = None) -> str | None:
        self.timeout = timeout
        if self.behaviour == "fail":
            self.running = False
            raise ReplicaStartError("model_fn raised: ValueError: nope")
        if self.behaviour == "block":
            assert cancel is not None
            cancel.wait(30)
            return None
        self.address = f"127.0.0.1:{self.fake_pid}"
        return self.address

    def alive(self) -> bool:
        return self.running

    def health(self, timeout: float = 1.0) -> dict[str, Any] | None:
        if not self.running:
            return None
        reason = getattr(self, "recycle_reason", None)
        return {"status": 200, "requests": 7, "inflight": 0, **({"recycle": reason} if reason else {})}

    def terminate(self, grace: float = 0.0) -> int | None:
        self.running = False
        self.terminated = True
        return 0

    def log_tail(self, lines: int = 20) -> str:
        return "fake log tail"

    @classmethod
    def kill_stale(cls, pid: int, replica_dir: Path, grace: float = 0.0) -> bool:
        cls.stale_kills.append((pid, replica_dir))
        return True


@pytest.fixture(autouse=True)
def _reset_fake():
    FakeProcess.behaviour = "ready"
    FakeProcess.instances = []
    FakeProcess.stale_kills = []


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", host_id=HOST_ID, s3_endpoint_url="http://unused").resolved()


@pytest.fixture
def sessions(tmp_path):
    engine = make_engine("sqlite:///" + str(tmp_path / "t.db"))
    Base.metadata.create_all(engine)
    factory = make_sessionmaker(engine)
    with session_scope(factory) as session:
        session.add(m.Account(id="123456789012", name="t"))
    yield factory
    engine.dispose()


@pytest.fixture
def agent(settings, sessions):
    agent = HostAgent(settings, sessions, FakeS3, process_cls=FakeProcess, stop_grace=0.1)
    agent.heartbeat()
    yield agent
    agent.shutdown(timeout=5)


_names = itertools.count()


def add_replica(sessions, pid: int | None = None, state: ReplicaState = ReplicaState.PENDING, **extra: Any) -> int:
    name = f"ep-{next(_names)}"
    with session_scope(sessions) as session:
        endpoint = m.Endpoint(account_id="123456789012", name=name, arn=f"arn:{name}", endpoint_config_name=name)
        session.add(endpoint)
        session.flush()
        variant = m.EndpointVariant(
            endpoint_id=endpoint.id,
            name="AllTraffic",
            model_name="m",
            container={"ModelDataUrl": URL, "Environment": {"A": "1"}},
            instance_type="ml.c5.large",
            extra=extra,
        )
        session.add(variant)
        session.flush()
        replica = m.Replica(endpoint_id=endpoint.id, variant_id=variant.id, host_id=HOST_ID, pid=pid, state=state)
        session.add(replica)
        session.flush()
        return replica.id


def load(sessions, replica_id: int) -> m.Replica:
    with sessions() as session:
        replica = session.get(m.Replica, replica_id)
        assert replica is not None
        return replica


def step_until(agent: HostAgent, sessions, replica_id: int, predicate, timeout: float = 10) -> m.Replica:
    """Run passes of the agent until the replica's row satisfies ``predicate``."""

    def stepped() -> m.Replica | None:
        agent.step()
        replica = load(sessions, replica_id)
        return replica if predicate(replica) else None

    def state() -> tuple:
        replica = load(sessions, replica_id)
        return (replica.state, replica.failure_reason)

    return wait_for(stepped, timeout, what=f"replica {replica_id}", interval=0.01, state=state)


def set_desired(sessions, replica_id: int, desired: str) -> None:
    with session_scope(sessions) as session:
        session.execute(update(m.Replica).where(m.Replica.id == replica_id).values(desired_state=desired))


def test_a_pending_replica_is_fetched_started_and_reported_ready(agent, sessions, settings):
    replica_id = add_replica(sessions, **{"ContainerStartupHealthCheckTimeoutInSeconds": 42})

    ready = step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY)

    (proc,) = FakeProcess.instances
    assert (ready.address, ready.pid, ready.restarts) == (proc.address, proc.fake_pid, 0)
    assert proc.timeout == 42.0, "the variant's startup health-check timeout is honoured"
    assert (proc.model_dir / "model.pth").read_bytes() == b"w"
    assert proc.model_dir.parent.name == "extracted", "unpacked once per artifact per host, not per replica"
    assert proc.env["A"] == "1"


def test_a_crash_loop_restarts_at_once_then_backs_off(agent, sessions):
    replica_id = add_replica(sessions)
    step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY)

    FakeProcess.instances[-1].running = False
    second = step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY and r.restarts == 1)
    assert second.pid == FakeProcess.instances[-1].fake_pid

    # Dying again right after a restart means a crash loop: the next start waits.
    FakeProcess.instances[-1].running = False
    agent.step()
    for _ in range(5):
        agent.step()
    backing_off = load(sessions, replica_id)
    assert (backing_off.state, backing_off.restarts, backing_off.address) == (ReplicaState.STARTING, 2, None)
    assert len(FakeProcess.instances) == 2, "no new process during the back-off"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_heartbeats_and_the_crash_back_off_follow_the_agents_clock(settings, sessions):
    clock = FakeClock()
    agent = HostAgent(settings, sessions, FakeS3, process_cls=FakeProcess, stop_grace=0.1, clock=clock)
    try:
        agent.step()  # registers the host

        def beat():
            with session_scope(sessions) as session:
                host = session.get(m.Host, HOST_ID)
                assert host is not None
                return host.last_heartbeat

        first = beat()
        agent.step()
        assert beat() == first, "no heartbeat before the interval has passed on the agent's clock"
        clock.now += agent.heartbeat_interval
        agent.step()
        assert beat() > first

        replica_id = add_replica(sessions)
        step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY)
        FakeProcess.instances[-1].running = False  # the first crash restarts at once
        step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY and r.restarts == 1)
        FakeProcess.instances[-1].running = False  # crashing again right away is a crash loop: back off
        agent.step()
        agent.step()
        assert load(sessions, replica_id).state == ReplicaState.STARTING and len(FakeProcess.instances) == 2
        for _ in range(5):
            agent.step()  # real time passes, the agent's clock does not: still backing off
        assert len(FakeProcess.instances) == 2
        clock.now += 1.0  # the back-off after a second crash in a row
        again = step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY and r.restarts == 2)
        assert again.pid == FakeProcess.instances[-1].fake_pid and len(FakeProcess.instances) == 3
    finally:
        agent.shutdown(timeout=5)


def test_a_failed_start_is_not_retried_until_the_reconciler_sets_pending(agent, sessions):
    FakeProcess.behaviour = "fail"
    replica_id = add_replica(sessions)

    failed = step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.FAILED)
    for _ in range(5):
        agent.step()

    assert (failed.failure_reason, failed.log_tail) == ("model_fn raised: ValueError: nope", "fake log tail")
    assert len(FakeProcess.instances) == 1
    assert FakeProcess.instances[0].terminated

    FakeProcess.behaviour = "ready"
    with session_scope(sessions) as session:
        session.execute(update(m.Replica).where(m.Replica.id == replica_id).values(state=ReplicaState.PENDING))
    ready = step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY)
    assert (ready.failure_reason, ready.restarts) == (None, 0)


def test_stopping_a_replica_that_is_still_starting_cancels_the_start(agent, sessions):
    FakeProcess.behaviour = "block"
    replica_id = add_replica(sessions)
    step_until(agent, sessions, replica_id, lambda r: r.pid is not None)

    set_desired(sessions, replica_id, "stopped")
    stopped = step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.STOPPED)

    assert FakeProcess.instances[0].terminated
    assert (stopped.address, stopped.pid) == (None, None)


def test_a_deleted_row_ends_its_process(agent, sessions):
    replica_id = add_replica(sessions)
    step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY)

    with session_scope(sessions) as session:
        session.delete(session.get(m.Replica, replica_id))
    wait_for(lambda: agent.step() or replica_id not in agent.managed_pids(), 10, what="the agent to let go")

    assert FakeProcess.instances[0].terminated


def test_the_first_pass_kills_stale_processes_and_restarts_ready_replicas(agent, sessions, settings):
    replica_id = add_replica(sessions, pid=4242, state=ReplicaState.READY)

    ready = step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY and r.pid != 4242)

    assert FakeProcess.stale_kills == [(4242, settings.replicas_dir / str(replica_id))]
    assert ready.restarts == 1


def test_shutdown_leaves_running_replicas_pending_and_failed_ones_failed(agent, sessions):
    ready_id = add_replica(sessions)
    step_until(agent, sessions, ready_id, lambda r: r.state == ReplicaState.READY)
    FakeProcess.behaviour = "fail"
    failed_id = add_replica(sessions)
    step_until(agent, sessions, failed_id, lambda r: r.state == ReplicaState.FAILED)

    agent.shutdown(timeout=5)

    assert FakeProcess.instances[0].terminated
    assert (load(sessions, ready_id).state, load(sessions, ready_id).address) == (ReplicaState.PENDING, None)
    assert load(sessions, failed_id).state == ReplicaState.FAILED


def test_replica_env_layers_the_container_environment_over_sagemaker_defaults(agent, monkeypatch, tmp_path):
    monkeypatch.setenv("NEURONDOCK_ROOT_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    container = {"Environment": {"OMP_NUM_THREADS": "2", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}}

    env = agent.launcher.environment(container, tmp_path / "model", 7, sandboxed=False)
    sandboxed = agent.launcher.environment(container, tmp_path / "model", 7, sandboxed=True)

    assert "NEURONDOCK_ROOT_SECRET_ACCESS_KEY" not in env and "AWS_ACCESS_KEY_ID" not in env
    assert env["OMP_NUM_THREADS"] == "2", "the user's Environment wins over neurondock's defaults"
    assert env["SAGEMAKER_SUBMIT_DIRECTORY"] == str(tmp_path / "model" / "code")
    # In the sandbox the model is where SageMaker puts it.
    assert sandboxed["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert sandboxed["SM_MODEL_DIR"] == "/opt/ml/model"
    assert (env["SAGEMAKER_REGION"], env["PYTHONUNBUFFERED"], env["NEURONDOCK_REPLICA_ID"]) == (
        "us-east-1",
        "1",
        "7",
    )


def test_a_second_live_agent_on_the_same_host_id_is_refused(settings, sessions):
    with session_scope(sessions) as session:
        session.add(m.Host(id=HOST_ID, address="127.0.0.1", agent_pid=os.getppid()))

    with pytest.raises(AgentConflictError, match=f"Another host agent \\(pid {os.getppid()}\\) is running"):
        HostAgent(settings, sessions, FakeS3, process_cls=FakeProcess).heartbeat()

    # An agent that died (its pid is gone) is simply replaced.
    dead = subprocess.Popen(["true"])
    dead.wait()
    with session_scope(sessions) as session:
        session.execute(update(m.Host).where(m.Host.id == HOST_ID).values(agent_pid=dead.pid))
    HostAgent(settings, sessions, FakeS3, process_cls=FakeProcess).heartbeat()
    with sessions() as session:
        host = session.get(m.Host, HOST_ID)
        assert host is not None and host.agent_pid == os.getpid()


LEAK = "RSS grew by 40 MiB past the limit 32 MiB"


@pytest.fixture
def fast_agent(settings, sessions):
    agent = HostAgent(settings, sessions, FakeS3, process_cls=FakeProcess, stop_grace=0.1, health_interval=0.0)
    agent.heartbeat()
    yield agent
    agent.shutdown(timeout=5)


def test_a_replica_that_asks_is_replaced_then_its_old_process_stopped(fast_agent, sessions, settings):
    replica_id = add_replica(sessions)
    with session_scope(sessions) as session:
        # What the reconciler writes for an instance on NeuronCore 2.
        session.execute(update(m.Replica).where(m.Replica.id == replica_id).values(extra={"cores": [2]}))
    first = step_until(fast_agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY)
    old = FakeProcess.instances[0]
    old.recycle_reason = LEAK

    switched = step_until(fast_agent, sessions, replica_id, lambda r: r.pid != first.pid)

    new = FakeProcess.instances[1]
    assert (switched.state, switched.address, switched.pid) == (ReplicaState.READY, new.address, new.fake_pid)
    assert switched.extra["recycles"] == 1 and switched.extra["last_recycle"]["reason"] == LEAK
    assert switched.extra["cores"] == [2], "the reconciler's keys survive"
    assert switched.restarts == 0, "a recycle is not a crash"
    assert not old.terminated, "the old process serves until the routers have moved on"
    assert new.env["NEURON_RT_VISIBLE_CORES"] == old.env["NEURON_RT_VISIBLE_CORES"] == "2"
    assert new.model_dir == old.model_dir
    wait_for(lambda: fast_agent.step() or old.terminated, 10, what="the old process to be stopped")
    for _ in range(5):
        fast_agent.step()
    assert len(FakeProcess.instances) == 2 and not new.terminated
    log = (settings.replicas_dir / str(replica_id) / "replica.log").read_text()
    assert f"neurondock: recycled: {LEAK} (pid {old.fake_pid} replaced by pid {new.fake_pid}" in log


def test_a_replacement_that_fails_leaves_the_old_process_serving(fast_agent, sessions, settings):
    replica_id = add_replica(sessions)
    first = step_until(fast_agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY)
    FakeProcess.behaviour = "fail"
    FakeProcess.instances[0].recycle_reason = LEAK

    wait_for(
        lambda: fast_agent.step() or (len(FakeProcess.instances) >= 2 and FakeProcess.instances[1].terminated),
        10,
        what="a replacement to be tried and given up",
    )
    for _ in range(20):
        fast_agent.step()
        time.sleep(0.01)

    after = load(sessions, replica_id)
    assert (after.state, after.pid, after.address) == (ReplicaState.READY, first.pid, first.address)
    assert not FakeProcess.instances[0].terminated
    assert len(FakeProcess.instances) == 2, "no retry before recycle.RETRY_SECONDS"
    log = (settings.replicas_dir / str(replica_id) / "replica.log").read_text()
    assert "the replacement did not start (model_fn raised: ValueError: nope)" in log


def test_a_stop_during_a_recycle_cancels_the_replacement(fast_agent, sessions):
    replica_id = add_replica(sessions)
    step_until(fast_agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY)
    FakeProcess.behaviour = "block"
    FakeProcess.instances[0].recycle_reason = LEAK
    wait_for(lambda: fast_agent.step() or len(FakeProcess.instances) >= 2, 10, what="a replacement to start")

    set_desired(sessions, replica_id, "stopped")
    stopped = step_until(fast_agent, sessions, replica_id, lambda r: r.state == ReplicaState.STOPPED)

    assert stopped.pid is None and all(p.terminated or not p.running for p in FakeProcess.instances)


def test_an_idle_agent_waits_long_but_a_changed_replica_row_wakes_it_at_once(settings, sessions):
    from dataclasses import replace

    from neurondock_platform import wakeup

    slow = replace(settings, agent_idle_poll_interval=60.0)
    agent = HostAgent(slow, sessions, FakeS3, process_cls=FakeProcess, stop_grace=0.1, heartbeat_interval=600.0)
    passes: list[int] = []
    step = agent.step
    agent.step = lambda: (step(), passes.append(1))[0]  # type: ignore[method-assign]
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for(lambda: passes and agent._pause() > 30.0, 10, what="a first pass, then an idle agent")
        # A row written through a factory without the hooks rings nothing: the agent sleeps on.
        first = add_replica(sessions)
        time.sleep(0.5)  # a window in which nothing may happen, not a wait for readiness
        assert load(sessions, first).state == ReplicaState.PENDING

        wakeup.install(sessions, settings.data_dir)  # as the worker's and the API's factories are
        second = add_replica(sessions)
        # The rung pass starts both (the first one's start may still be finishing when the second is Ready).
        wait_for(
            lambda: {load(sessions, r).state for r in (first, second)} == {ReplicaState.READY},
            10,
            what="the rung agent to start both",
        )
    finally:
        stop.set()
        agent.wake()
        runner.join(20)
    assert not runner.is_alive()


def test_an_idle_agent_health_checks_and_heartbeats_on_time_without_reading_its_rows_between_full_passes(
    settings, sessions
):
    from dataclasses import replace

    slow = replace(settings, agent_idle_poll_interval=60.0)
    agent = HostAgent(
        slow, sessions, FakeS3, process_cls=FakeProcess, stop_grace=0.1, health_interval=0.05, heartbeat_interval=1.0
    )
    agent.heartbeat()  # registers the host its replica is placed on
    replica_id = add_replica(sessions)
    step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY)
    passes, checks = [0], [0]
    step, check = agent.step, agent._check_health
    agent.step = lambda: (passes.__setitem__(0, passes[0] + 1), step())[1]  # type: ignore[method-assign]
    agent._check_health = lambda m: (checks.__setitem__(0, checks[0] + 1), check(m))[1]  # type: ignore[method-assign]
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    runner.start()
    try:
        # Checked 0.05 s apart, then every 0.5 s once two answers showed it idle; a heartbeat every second.
        wait_for(lambda: checks[0] >= 4, 15, what="health checks between full passes")
        assert passes[0] == 1, "only the first pass read the rows; the checks ran on their own"
        beat = agent._last_heartbeat
        wait_for(lambda: agent._last_heartbeat > beat, 10, what="a heartbeat without a full pass")
        assert passes[0] == 1
        agent._managed[replica_id].proc.running = False  # type: ignore[union-attr]  # dead, and no SIGCHLD rang
        wait_for(lambda: passes[0] > 1, 10, what="a full pass for the dead process")
    finally:
        stop.set()
        agent.wake()
        runner.join(20)
    assert not runner.is_alive()


def test_a_replica_that_served_nothing_since_its_last_check_is_checked_ten_times_less_often(agent, sessions):
    from neurondock_workers.hosting.agent import IDLE_HEALTH_FACTOR

    replica_id = add_replica(sessions)
    step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY)
    managed = agent._managed[replica_id]
    answers = iter([{"requests": 3, "inflight": 0}, {"requests": 3, "inflight": 0}, {"requests": 4, "inflight": 1}])
    managed.proc.health = lambda timeout=1.0: next(answers)  # type: ignore[union-attr, method-assign]

    agent._check_health(managed)  # the first answer: nothing to compare with yet
    assert agent._health_every(managed) == agent.health_interval
    agent._check_health(managed)  # the same count, nothing in flight: idle
    assert agent._health_every(managed) == agent.health_interval * IDLE_HEALTH_FACTOR
    agent._check_health(managed)  # a request came: back to every interval
    assert agent._health_every(managed) == agent.health_interval


def test_idle_replicas_checks_ride_a_heartbeat_when_due_before_the_next_one_and_share_its_thread(settings, sessions):
    clock = FakeClock()
    agent = HostAgent(
        settings, sessions, FakeS3, process_cls=FakeProcess, stop_grace=0.1, clock=clock, heartbeat_interval=4.0
    )
    try:
        agent.heartbeat()  # registers the host its replicas are placed on
        first, second = add_replica(sessions), add_replica(sessions)
        for replica_id in (first, second):
            step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.READY)
        every = agent.health_interval * 10  # idle
        checked: list[tuple[int, str]] = []
        done = threading.Event()

        def record(managed) -> None:
            checked.append((managed.replica_id, threading.current_thread().name))
            managed.checking = False
            if len(checked) == 3:
                done.set()

        agent._check_health = record  # type: ignore[method-assign]
        one, two = agent._managed[first], agent._managed[second]
        for managed in (one, two):
            managed.idle = True
        one.checked_at = clock.now - every + 3.0  # due in 3 s: before the next beat
        two.checked_at = clock.now - every + 9.0  # due in 9 s: after the beat after next (``_idle_companions``)

        agent._last_heartbeat = clock.now  # no beat due: nothing is checked before its time
        agent.tend()
        assert not one.checking and not two.checking and not checked

        agent._last_heartbeat = clock.now - agent.heartbeat_interval  # a beat is due
        agent.tend()
        assert one.checked_at == clock.now and two.checked_at == clock.now - every + 9.0
        wait_for(lambda: checked, 5, what="the first replica's check")

        clock.now += agent.heartbeat_interval  # the next beat, with both checks due before the one after:
        one.checked_at = two.checked_at = clock.now - every + 3.0  # checked together, on one thread
        agent.tend()
        wait_for(done.is_set, 5, what="both checks")
        assert checked[0][0] == first and {rid for rid, _ in checked[1:]} == {first, second}
        assert {name for _, name in checked} == {"idle-replicas-health"}
    finally:
        agent.shutdown()


class _FetchAfterHello:
    """A store whose HEAD waits for the replica's interpreter to say hello, then finds no such key."""

    def __init__(self, spawned: list[Any]) -> None:
        self.spawned = spawned
        self.saw_hello = False

    def __call__(self, owner: Any) -> _FetchAfterHello:
        return self

    def head(self, bucket: str, key: str) -> ObjectHead:
        # Hello comes before the interpreter imports torch (~0.1 s); without a head start none is spawned.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (self.spawned and self.spawned[0].hello.is_set()):
            time.sleep(0.01)
        self.saw_hello = bool(self.spawned) and self.spawned[0].hello.is_set()
        raise StoreError("AccessDenied", 403)


def test_a_cold_interpreter_starts_before_the_fetch_returns_and_a_failed_fetch_leaves_nothing(
    settings, sessions, monkeypatch
):
    spawned: list[Any] = []

    def recording_spawn(*args: Any, **kwargs: Any) -> Any:
        spawned.append(standby.spawn(*args, **kwargs))
        return spawned[-1]

    monkeypatch.setattr(process, "spawn", recording_spawn)
    pool = StandbyPool({}, settings.data_dir / "standby", size=0)
    monkeypatch.setattr(ReplicaProcess, "standby_pool", pool)
    fetch = _FetchAfterHello(spawned)
    agent = HostAgent(settings, sessions, fetch, stop_grace=0.1)
    agent.heartbeat()
    try:
        replica_id = add_replica(sessions)
        failed = step_until(agent, sessions, replica_id, lambda r: r.state == ReplicaState.FAILED, timeout=30)
    finally:
        agent.shutdown(timeout=5)

    assert fetch.saw_hello, "the interpreter was spawned (and said hello) while the model data was fetched"
    assert failed.failure_reason == "Could not download model data from s3://models/tiny/model.tar.gz: AccessDenied"
    (interpreter,) = spawned
    assert interpreter.proc.poll() is not None, "the failed start's interpreter is gone"
    assert interpreter.pid is None or not pid_alive(interpreter.pid)
    slots = agent.slots_dir
    assert not slots.exists() or not any(slots.iterdir()), "and so is its sandbox slot"
    assert pool.serving == 0, "the start is counted out of the standby pool"
