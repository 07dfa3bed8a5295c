"""A warm standby interpreter becomes a serving replica without importing torch again."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.support.replica_channel import predict_npy
from tests.support.torch_models import tiny_mlp
from tests.support.waiting import wait_for

from neurondock_platform.config import Settings
from neurondock_platform.dataplane import protocol
from neurondock_workers.hosting.agent import ReplicaProcess
from neurondock_workers.hosting.standby import PIDFILE, READY_MARKER, StandbyPool
from neurondock_workers.sandbox import for_settings


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURONDOCK_", "AWS_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _saved_model(tmp_path: Path, seed: int) -> tuple[Path, Any]:
    import torch

    model_dir = tmp_path / "replica" / "model"
    model_dir.mkdir(parents=True)
    model = tiny_mlp(seed=seed)
    torch.jit.save(model, str(model_dir / "model.pt"))
    return model_dir, model


def test_compatible_only_when_startup_variables_agree(tmp_path):
    pool = StandbyPool(_base_env(), tmp_path)
    assert pool.compatible({**_base_env(), "SAGEMAKER_PROGRAM": "inference.py"})
    assert not pool.compatible({**_base_env(), "OMP_NUM_THREADS": "4"})
    assert not pool.compatible({**_base_env(), "PYTHONHASHSEED": "1"})


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandboxed", "unsandboxed"])
def test_standby_becomes_a_replica(tmp_path, sandboxed):
    import torch

    model_dir, model = _saved_model(tmp_path, seed=2)
    sandbox = for_settings(Settings(data_dir=tmp_path / "data").resolved()) if sandboxed else None
    if sandbox is not None and not sandbox.enabled:
        pytest.skip(f"no sandbox here: {sandbox.describe()}")
    slots = tmp_path / "slots"
    pool = StandbyPool(_base_env(), tmp_path / "standby", sandbox=sandbox, slots_dir=slots)
    pool.fill()
    log = tmp_path / "standby" / "standby.log"
    wait_for(lambda: log.exists() and READY_MARKER in log.read_text(errors="replace"), 60, what="the standby")
    ReplicaProcess.standby_pool = pool
    try:
        env = {**_base_env(), "SM_MODEL_DIR": str(ReplicaProcess.view_of(model_dir, sandbox))}
        proc = ReplicaProcess(1, model_dir, tmp_path / "replica" / "replica.log", env, sandbox=sandbox, slots_dir=slots)
        started = time.monotonic()
        pid = proc.start()
        address = proc.wait_ready(60)
        warm_seconds = time.monotonic() - started
        assert address is not None
        assert (tmp_path / "replica" / PIDFILE).read_text() == str(pid)
        x = np.ones((2, 16), dtype="float32")
        np.testing.assert_allclose(
            predict_npy(address, proc.channel_key, x), model(torch.from_numpy(x)).detach().numpy(), rtol=1e-5
        )
        # A router on this host reaches it on its Unix socket, behind the same handshake.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as local:
            local.settimeout(10)
            local.connect(protocol.local_name(proc.channel_key))
            protocol.authenticate(local, proc.channel_key)
            protocol.send_frame(local, {"op": "ping"})
            assert protocol.recv_frame(local)[0]["status"] == 200
        print(f"warm replica ready in {warm_seconds:.2f} s")
        assert "starting from a standby interpreter" in proc.log_tail(50)
        assert proc.terminate(5) is not None
    finally:
        ReplicaProcess.standby_pool = None
        pool.close()
    assert not slots.exists() or not any(slots.iterdir()), "stopped replicas and standbys leave no slot behind"


def test_by_default_a_serving_host_keeps_no_standby_and_the_last_replica_gone_refills_it(tmp_path):
    model_dir, _ = _saved_model(tmp_path, seed=4)
    pool = StandbyPool(_base_env(), tmp_path / "standby")
    pool.fill()
    wait_for(lambda: pool.warm_count() == 1, 60, what="a warm standby")
    ReplicaProcess.standby_pool = pool
    try:
        env = {**_base_env(), "SM_MODEL_DIR": str(model_dir)}
        proc = ReplicaProcess(1, model_dir, tmp_path / "replica" / "replica.log", env)
        proc.start()
        assert proc.wait_ready(60) is not None
        assert pool.taken_warm == 1

        wait_for(lambda: not pool.filling, 10, what="the fill to end")
        assert (pool.waiting_count(), pool.spawned, pool.serving) == (0, 1, 1), "Ready: no standby beside it"

        assert proc.terminate(5) is not None
        assert pool.serving == 0
        wait_for(lambda: pool.warm_count() == 1, 60, what="the refill", state=lambda: pool.spawned)
        assert pool.spawned == 2
    finally:
        ReplicaProcess.standby_pool = None
        pool.close()


def test_a_standby_taken_while_importing_is_replaced_once_its_model_has_loaded(tmp_path):
    # An endpoint created right after `up` takes the standby before torch is imported; the pool's fill
    # is still waiting on it then, and must not start the next import beside the model's load. With
    # standbys kept while serving (NEURONDOCK_STANDBY_WHILE_SERVING), the replacement comes after it.
    model_dir, _ = _saved_model(tmp_path, seed=3)
    pool = StandbyPool(_base_env(), tmp_path / "standby", while_serving=True)
    pool.fill()
    ReplicaProcess.standby_pool = pool
    try:
        env = {**_base_env(), "SM_MODEL_DIR": str(model_dir)}
        proc = ReplicaProcess(1, model_dir, tmp_path / "replica" / "replica.log", env)
        wait_for(lambda: pool.importing_count() == 1, 30, what="a standby importing torch")
        proc.start()
        assert (pool.taken_warm, pool.taken_warming) == (0, 1), "taken while still importing"
        wait_for(lambda: not pool.filling, 60, what="the first fill to end", state=lambda: pool.spawned)
        assert pool.spawned == 1, "no refill's torch import while the model loads"

        assert proc.wait_ready(60) is not None
        wait_for(lambda: pool.warm_count() == 1, 60, what="the refill", state=lambda: pool.spawned)
        assert pool.spawned == 2
        assert proc.terminate(5) is not None
    finally:
        ReplicaProcess.standby_pool = None
        pool.close()


def test_a_pool_hands_out_its_warm_interpreters_in_a_row(tmp_path):
    # An ml.inf1.xlarge starts its replicas (one per NeuronCore) at once: all should start warm. Two
    # show it as well as four, at half the imports on a 2-core machine.
    pool = StandbyPool(_base_env(), tmp_path / "standby", size=2)
    pool.fill()
    taken = []
    try:
        wait_for(lambda: pool.warm_count() >= 2, 120, what="2 warm standbys", state=pool.warm_count)

        taken = [pool.take(_base_env()) for _ in range(2)]

        assert all(p is not None and p.proc.poll() is None for p in taken)
        assert len({p.pid for p in taken if p is not None}) == 2
        assert (pool.taken_warm, pool.taken_warming) == (2, 0)
        assert pool.take({**_base_env(), "OMP_NUM_THREADS": "4"}) is None, "an incompatible env starts cold"
    finally:
        pool.close()
        for standby in taken:
            if standby is not None:
                standby.release()
    assert all(p is not None and p.proc.returncode == 0 for p in taken), "an unused standby exits cleanly"


def test_a_head_start_that_does_not_fit_its_replica_is_let_go_and_the_replica_starts_from_the_pool(tmp_path):
    # The agent acquires the interpreter before the fetch; if what it then starts differs in what the
    # interpreter was started with (here its thread count), that interpreter must not serve it.
    import torch

    model_dir, model = _saved_model(tmp_path, seed=5)
    pool = StandbyPool(_base_env(), tmp_path / "standby")
    pool.fill()
    wait_for(lambda: pool.warm_count() == 1, 60, what="a warm standby")
    ReplicaProcess.standby_pool = pool
    try:
        log = tmp_path / "replica" / "replica.log"
        env = {**_base_env(), "SM_MODEL_DIR": str(model_dir)}
        head = ReplicaProcess.head_start(
            1, log, {**env, "OMP_NUM_THREADS": "4"}, sandbox=None, network=True, slots_dir=tmp_path / "slots"
        )
        assert head.interpreter is not None and not head.took, "an incompatible env starts cold"
        misfit = head.interpreter.proc
        assert pool.serving == 1

        proc = ReplicaProcess(1, model_dir, log, env)
        pid = proc.start(head)
        address = proc.wait_ready(60)

        assert address is not None
        assert misfit.wait(10) is not None, "the misfit interpreter is stopped"
        assert pid != misfit.pid and proc.pid != misfit.pid
        assert (pool.serving, pool.taken_warm) == (1, 1), "counted in once; the replica took the warm standby"
        assert "starting from a standby interpreter" in proc.log_tail(50)
        x = np.ones((3, 16), dtype="float32")
        np.testing.assert_allclose(
            predict_npy(address, proc.channel_key, x), model(torch.from_numpy(x)).detach().numpy(), rtol=1e-5
        )
        assert proc.terminate(5) is not None
        assert pool.serving == 0
    finally:
        ReplicaProcess.standby_pool = None
        pool.close()


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandboxed", "unsandboxed"])
def test_a_head_start_whose_interpreter_died_before_activation_is_replaced_by_a_cold_one(tmp_path, sandboxed):
    import torch

    model_dir, model = _saved_model(tmp_path, seed=6)
    sandbox = for_settings(Settings(data_dir=tmp_path / "data").resolved()) if sandboxed else None
    if sandbox is not None and not sandbox.enabled:
        pytest.skip(f"no sandbox here: {sandbox.describe()}")
    slots = tmp_path / "slots"
    log = tmp_path / "replica" / "replica.log"
    env = {**_base_env(), "SM_MODEL_DIR": str(ReplicaProcess.view_of(model_dir, sandbox))}
    head = ReplicaProcess.head_start(1, log, env, sandbox=sandbox, network=True, slots_dir=slots)
    assert head.interpreter is not None
    early = head.interpreter.proc
    early.kill()  # e.g. the OOM killer while the model data downloads
    early.wait(10)

    proc = ReplicaProcess(1, model_dir, log, env, sandbox=sandbox, slots_dir=slots)
    proc.start(head)
    address = proc.wait_ready(60)

    assert address is not None, proc.log_tail(50)
    assert proc._popen is not early
    x = np.ones((2, 16), dtype="float32")
    np.testing.assert_allclose(
        predict_npy(address, proc.channel_key, x), model(torch.from_numpy(x)).detach().numpy(), rtol=1e-5
    )
    assert proc.terminate(5) is not None
    assert not slots.exists() or not any(slots.iterdir()), "neither interpreter leaves a slot behind"
