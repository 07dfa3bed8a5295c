"""A warm standby interpreter becomes a serving replica without importing torch again."""

from __future__ import annotations

import io
import os
import time

import numpy as np
from tests.support.torch_models import tiny_mlp

from neurondock_platform.dataplane import protocol
from neurondock_workers.hosting.agent import ReplicaProcess
from neurondock_workers.hosting.standby import PIDFILE, READY_MARKER, StandbyPool, release


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEURONDOCK_", "AWS_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def test_compatible_only_when_startup_variables_agree(tmp_path):
    pool = StandbyPool(_base_env(), tmp_path)
    assert pool.compatible({**_base_env(), "SAGEMAKER_PROGRAM": "inference.py"})
    assert not pool.compatible({**_base_env(), "OMP_NUM_THREADS": "4"})
    assert not pool.compatible({**_base_env(), "PYTHONHASHSEED": "1"})


def test_standby_becomes_a_replica(tmp_path):
    import torch

    model_dir = tmp_path / "replica" / "model"
    model_dir.mkdir(parents=True)
    model = tiny_mlp(seed=2)
    torch.jit.save(model, str(model_dir / "model.pt"))
    pool = StandbyPool(_base_env(), tmp_path / "standby")
    pool.fill()
    deadline = time.monotonic() + 60
    log = tmp_path / "standby" / "standby.log"
    while not log.exists() or READY_MARKER not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "standby never became ready"
        time.sleep(0.05)
    ReplicaProcess.standby_pool = pool
    try:
        proc = ReplicaProcess(1, model_dir, tmp_path / "replica" / "replica.log", _base_env())
        started = time.monotonic()
        pid = proc.start()
        address = proc.wait_ready(60)
        warm_seconds = time.monotonic() - started
        assert address is not None
        assert (tmp_path / "replica" / PIDFILE).read_text() == str(pid)
        x = np.ones((2, 16), dtype="float32")
        buf = io.BytesIO()
        np.save(buf, x)
        host, _, port = address.rpartition(":")
        import socket

        with socket.create_connection((host, int(port)), timeout=10) as sock:
            protocol.send_frame(
                sock,
                {"op": "invoke", "content_type": "application/x-npy", "accept": "application/x-npy"},
                buf.getvalue(),
            )
            meta, body = protocol.recv_frame(sock)
        assert meta["status"] == 200
        np.testing.assert_allclose(np.load(io.BytesIO(body)), model(torch.from_numpy(x)).detach().numpy(), rtol=1e-5)
        print(f"warm replica ready in {warm_seconds:.2f} s")
        assert proc.terminate(5) is not None
    finally:
        ReplicaProcess.standby_pool = None
        pool.close()


def test_a_pool_of_four_hands_out_four_warm_interpreters_in_a_row(tmp_path):
    # An ml.inf1.xlarge starts its 4 replicas (one per NeuronCore) at once: all should start warm.
    pool = StandbyPool(_base_env(), tmp_path / "standby", size=4)
    pool.fill()
    taken = []
    try:
        deadline = time.monotonic() + 120
        while pool.warm_count() < 4:
            assert time.monotonic() < deadline, f"only {pool.warm_count()} of 4 standbys became warm"
            time.sleep(0.05)

        taken = [pool.take(_base_env()) for _ in range(4)]

        assert all(p is not None and p.poll() is None for p in taken)
        assert len({p.pid for p in taken if p is not None}) == 4
        assert (pool.taken_warm, pool.taken_warming) == (4, 0)
        assert pool.take({**_base_env(), "OMP_NUM_THREADS": "4"}) is None, "an incompatible env starts cold"
    finally:
        pool.close()
        for proc in taken:
            if proc is not None:
                release(proc)
    assert all(p is not None and p.returncode == 0 for p in taken), "an unused standby exits cleanly"
