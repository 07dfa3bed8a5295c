"""The host agent against a real SQLite database, moto's S3 and real replica processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import delete, update
from tests.integration.hosting.conftest import ACCOUNT_ID
from tests.support.processes import pid_gone
from tests.support.replica_channel import invoke_npy
from tests.support.waiting import wait_for

import neurondock_platform.models as m
from neurondock_platform.config import Settings
from neurondock_platform.dataplane import protocol
from neurondock_platform.db import session_scope, utcnow
from neurondock_platform.models import ReplicaState
from neurondock_workers.hosting.agent import ReplicaProcess, replica_dir
from neurondock_workers.hosting.s3 import OwnerClients, StoreOwner

X = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def wait_gone(pid: int, timeout: float = 15) -> None:
    wait_for(lambda: pid_gone(pid), timeout, what=f"pid {pid} to exit")


@pytest.fixture
def expected(reference_model) -> np.ndarray:
    with torch.no_grad():
        return reference_model(torch.from_numpy(X)).numpy()


def test_replica_lifecycle_ready_crash_restart_stop_and_delete(
    make_agent, upload, add_replica, step_until, load_replica, sessions, settings, tiny_model_bytes, expected
):
    agent = make_agent()
    replica_id = add_replica(upload({"model.pth": tiny_model_bytes}))

    ready = step_until(agent, replica_id, lambda r: r.state == ReplicaState.READY)

    assert ready.address and ready.pid and ready.setup_seconds is not None and ready.failure_reason is None
    meta, out = invoke_npy(ready.address, ready.channel_key, X)
    assert meta["status"] == 200
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert (replica_dir(settings, replica_id) / "replica.log").exists()
    with sessions() as session:
        host = session.get(m.Host, settings.host_id)
        assert host is not None
        assert (host.address, host.chips, host.agent_pid) == ("127.0.0.1", 4, os.getpid())

    # A replica that dies is restarted, and the restart is counted.
    os.kill(ready.pid, signal.SIGKILL)
    restarted = step_until(agent, replica_id, lambda r: r.state == ReplicaState.READY and r.pid != ready.pid)
    assert restarted.restarts == 1
    assert invoke_npy(restarted.address, restarted.channel_key, X)[0]["status"] == 200

    # desired stopped → the process gets SIGTERM and the row says Stopped.
    with session_scope(sessions) as session:
        session.execute(update(m.Replica).where(m.Replica.id == replica_id).values(desired_state="stopped"))
    stopped = step_until(agent, replica_id, lambda r: r.state == ReplicaState.STOPPED)
    assert stopped.address is None and stopped.pid is None
    wait_gone(restarted.pid)

    # Asked to run again, it starts afresh (not counted as a restart) ...
    with session_scope(sessions) as session:
        session.execute(update(m.Replica).where(m.Replica.id == replica_id).values(desired_state="running"))
    again = step_until(agent, replica_id, lambda r: r.state == ReplicaState.READY)
    assert again.restarts == 1

    # ... and when its endpoint is deleted, the row goes and the agent ends the process.
    with session_scope(sessions) as session:
        session.execute(delete(m.Endpoint))
    wait_for(lambda: agent.step() or pid_gone(again.pid), 15, what="the orphaned replica to be killed")
    assert load_replica(replica_id) is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is not a tarball", "model.tar.gz is not a gzip tarball"),
        ({"model.pth": b"w", "../escape.py": b""}, "Refusing to extract model.tar.gz member '../escape.py'"),
        (None, "Could not download model data from s3://neurondock-models/missing/model.tar.gz: NoSuchKey"),
    ],
)
def test_bad_model_data_fails_with_an_actionable_reason(make_agent, upload, add_replica, step_until, content, reason):
    agent = make_agent()
    url = upload(content) if content is not None else "s3://neurondock-models/missing/model.tar.gz"
    replica_id = add_replica(url)

    failed = step_until(agent, replica_id, lambda r: r.state == ReplicaState.FAILED)

    assert failed.failure_reason.startswith(reason)
    assert reason in failed.log_tail
    for _ in range(5):
        agent.step()
    assert step_until(agent, replica_id, lambda r: True).state == ReplicaState.FAILED, "no restart loop"


def test_model_fn_raising_fails_with_its_last_exception_line_and_log_tail(
    make_agent, upload, add_replica, step_until, load_replica, sessions, settings, code
):
    agent = make_agent()
    source = code(
        """
        def model_fn(model_dir):
            print("loading the tokenizer", flush=True)
            raise FileNotFoundError("tokenizer.json is missing from model.tar.gz")
        """
    )
    replica_id = add_replica(upload({"code/inference.py": source}))

    failed = step_until(agent, replica_id, lambda r: r.state == ReplicaState.FAILED)

    assert failed.failure_reason == "model_fn raised: FileNotFoundError: tokenizer.json is missing from model.tar.gz"
    assert "loading the tokenizer" in failed.log_tail
    assert "Traceback (most recent call last)" in failed.log_tail
    assert failed.pid is None and failed.address is None
    for _ in range(5):
        agent.step()
    assert load_replica(replica_id).restarts == 0
    assert agent.managed_pids()[replica_id] is not None, "the failed process is remembered, not respawned"

    # The reconciler asks again by setting the replica Pending; then the agent tries once more.
    with session_scope(sessions) as session:
        session.execute(update(m.Replica).where(m.Replica.id == replica_id).values(state=ReplicaState.PENDING))
    again = step_until(agent, replica_id, lambda r: r.state == ReplicaState.FAILED and r.pid is None, timeout=60)
    assert again.failure_reason.startswith("model_fn raised")


def test_container_environment_reaches_the_model_but_platform_secrets_do_not(
    make_agent, upload, add_replica, step_until, code, monkeypatch
):
    monkeypatch.setenv("NEURONDOCK_ROOT_SECRET_ACCESS_KEY", "do-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    agent = make_agent()
    source = code(
        """
        import json
        import os

        def model_fn(model_dir):
            return None

        def transform_fn(model, data, content_type, accept):
            keys = ("GREETING", "SAGEMAKER_PROGRAM", "SAGEMAKER_SUBMIT_DIRECTORY", "SAGEMAKER_REGION",
                    "NEURONDOCK_ROOT_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "OMP_NUM_THREADS")
            return json.dumps({k: os.environ.get(k) for k in keys}), "application/json"
        """
    )
    replica_id = add_replica(
        upload({"code/serve.py": source}),
        environment={
            "GREETING": "hello",
            "SAGEMAKER_PROGRAM": "serve.py",
            "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
        },
    )

    ready = step_until(agent, replica_id, lambda r: r.state == ReplicaState.READY)
    with protocol.connect(ready.address, ready.channel_key, timeout=10) as sock:
        protocol.send_frame(sock, {"op": "invoke", "content_type": "application/json"}, b"{}")
        meta, body = protocol.recv_frame(sock)

    seen = json.loads(body)
    assert meta["status"] == 200
    assert seen["GREETING"] == "hello"
    assert seen["SAGEMAKER_PROGRAM"] == "serve.py"
    # In the sandbox the model is where SageMaker puts it.
    assert seen["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert (seen["SAGEMAKER_REGION"], seen["OMP_NUM_THREADS"]) == ("us-east-1", "1")
    assert seen["NEURONDOCK_ROOT_SECRET_ACCESS_KEY"] is None and seen["AWS_SECRET_ACCESS_KEY"] is None


def test_a_new_agent_kills_stale_replicas_and_restarts_them(
    make_agent, upload, add_replica, step_until, load_replica, settings, tiny_model_bytes, expected
):
    first = make_agent()
    replica_id = add_replica(upload({"model.pth": tiny_model_bytes}))
    old = step_until(first, replica_id, lambda r: r.state == ReplicaState.READY)
    rdir = replica_dir(settings, replica_id)
    assert ReplicaProcess.kill_stale(os.getpid(), rdir) is False, "only replica processes are touched"
    assert ReplicaProcess.kill_stale(old.pid, rdir.parent / "other") is False, "only this replica's"

    # The first agent "crashes": it never shuts down, its replica keeps running.
    second = make_agent()
    stop = threading.Event()
    runner = threading.Thread(target=second.run, args=(stop,), daemon=True)
    runner.start()
    try:
        row = wait_for(
            lambda: (r := load_replica(replica_id)).state == ReplicaState.READY and r.pid != old.pid and r,
            60,
            what="the replica to be restarted",
            interval=0.05,
            state=lambda: (load_replica(replica_id).state, load_replica(replica_id).failure_reason),
        )
        wait_gone(old.pid)
        assert row.restarts == 1
        _, out = invoke_npy(row.address, row.channel_key, X)
        np.testing.assert_allclose(out, expected, rtol=1e-6)
    finally:
        stop.set()
        second.wake()
        runner.join(30)
    assert not runner.is_alive()

    # run() shut its replicas down on the way out and left the rows for the next agent.
    wait_gone(row.pid)
    after = load_replica(replica_id)
    assert (after.state, after.address, after.pid) == (ReplicaState.PENDING, None, None)


def test_owner_clients_reach_only_the_buckets_mapped_to_the_account_in_an_external_store(settings, sessions, s3):
    from botocore.exceptions import ClientError

    s3.create_bucket(Bucket="someone-elses")
    s3.put_object(Bucket="someone-elses", Key="model.tar.gz", Body=b"not yours")
    client = OwnerClients(settings, sessions, session_name="t")(StoreOwner(ACCOUNT_ID, None))

    client.put_object(Bucket="neurondock-models", Key="factory/probe", Body=b"ok")
    assert client.get_object(Bucket="neurondock-models", Key="factory/probe")["Body"].read() == b"ok"
    assert client.meta.config.s3["addressing_style"] == "path"
    # The platform's external key could read it; the platform refuses before the request leaves.
    with pytest.raises(ClientError) as caught:
        client.get_object(Bucket="someone-elses", Key="model.tar.gz")
    assert caught.value.response["Error"]["Code"] == "AccessDenied"
    assert "not mapped to account" in caught.value.response["Error"]["Message"]


def _host_env(data_dir: Path, engine, moto_url: str) -> dict[str, str]:
    """A host process's environment as host-it on the test database, with moto's S3 and no other NEURONDOCK_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEURONDOCK_")}
    env.update(
        NEURONDOCK_DATA_DIR=str(data_dir),
        NEURONDOCK_DATABASE_URL=str(engine.url),
        NEURONDOCK_HOST_ID="host-it",
        NEURONDOCK_S3_ENDPOINT_URL=moto_url,
        NEURONDOCK_S3_ACCESS_KEY_ID="testing",
        NEURONDOCK_S3_SECRET_ACCESS_KEY="testing",
    )
    return env


def _replica_on_host_it(sessions, upload, add_replica, model_bytes: bytes) -> int:
    """A replica row for the tiny model on host-it (the row needs its host; the agent registers itself on start)."""
    url = upload({"model.pth": model_bytes})
    with session_scope(sessions) as session:
        session.add(m.Host(id="host-it", address="127.0.0.1"))
    return add_replica(url)


def test_run_agent_serves_until_sigterm_then_stops_its_replicas(
    tmp_path, engine, sessions, moto_url, upload, add_replica, load_replica, tiny_model_bytes
):
    replica_id = _replica_on_host_it(sessions, upload, add_replica, tiny_model_bytes)
    env = _host_env(tmp_path / "agent-data", engine, moto_url)
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(
        [sys.executable, "-m", "neurondock_workers.hosting.agent"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> m.Replica | None:
            assert agent.poll() is None, (tmp_path / "agent.log").read_text()
            row = load_replica(replica_id)
            return row if row.state == ReplicaState.READY else None

        row = wait_for(ready, 60, what="the replica to be Ready", interval=0.05, state=lambda: load_replica(replica_id))
        with sessions() as session:
            host = session.get(m.Host, "host-it")
            assert host is not None and host.agent_pid == agent.pid

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0, (tmp_path / "agent.log").read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        log.close()
    wait_gone(row.pid)
    assert load_replica(replica_id).state == ReplicaState.PENDING


# The supervisor's stop budget for each child before it kills it (Settings.stop_timeout's default).
STOP_BUDGET = Settings().stop_timeout


def _host_process(tmp_path, engine, moto_url) -> tuple[subprocess.Popen[bytes], Path]:
    """``python -m neurondock_workers host`` (Celery worker and host agent in one process) as host-it."""
    env = _host_env(tmp_path / "host-data", engine, moto_url)
    env.update(NEURONDOCK_STANDBY_POOL_SIZE="1", PYTHONUNBUFFERED="1")
    path = tmp_path / "host.log"
    with path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "neurondock_workers", "host"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return proc, path


def test_host_process_stops_both_halves_on_sigterm_within_its_stop_budget(
    tmp_path, engine, sessions, moto_url, upload, add_replica, load_replica, tiny_model_bytes
):
    replica_id = _replica_on_host_it(sessions, upload, add_replica, tiny_model_bytes)
    proc, log = _host_process(tmp_path, engine, moto_url)
    try:

        def serving() -> m.Replica | None:
            assert proc.poll() is None, log.read_text()
            row = load_replica(replica_id)
            celery_ready = " ready." in log.read_text()
            return row if row.state == ReplicaState.READY and celery_ready else None

        row = wait_for(serving, 60, what="the replica Ready and Celery ready", interval=0.05, state=log.read_text)

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(STOP_BUDGET)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert code == 0, text
    assert took < STOP_BUDGET, (took, text)
    # Both halves stopped themselves: Celery's warm shutdown, and the agent handed its replica back.
    assert "Warm shutdown" in text, text
    wait_gone(row.pid)
    assert load_replica(replica_id).state == ReplicaState.PENDING


def test_host_process_exits_non_zero_when_its_agent_half_fails(tmp_path, engine, sessions, moto_url):
    # A live agent (this test's process) beats as host-it: the host process's agent refuses to start.
    with session_scope(sessions) as session:
        session.add(m.Host(id="host-it", address="127.0.0.1", agent_pid=os.getpid(), last_heartbeat=utcnow()))
    proc, log = _host_process(tmp_path, engine, moto_url)
    try:
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert "Another host agent" in text, text
    assert code != 0, "half a host process (a Celery worker without its agent) must not run on"
