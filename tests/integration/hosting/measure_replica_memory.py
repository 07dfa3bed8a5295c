"""Measure what replicas cost: memory with and without shared weights, a standby's memory, warm vs cold starts.

Not a test (nothing is asserted); run it by hand on an otherwise quiet machine:

    python tests/integration/hosting/measure_replica_memory.py --replicas 4 --layers 12

It starts real replica processes (cold, as the host agent does without a standby pool), each with its
own copy of a TorchScript MLP of ``layers`` 1024x1024 Linear layers (4 MiB each), invokes each once,
then reads ``/proc/<pid>/smaps_rollup``. Pss is each process's fair share of the pages it maps; its
sum over the replicas is the memory they really use together.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tests.support.replica_channel import predict_npy
from tests.support.waiting import wait_for

from neurondock_platform.config import Settings
from neurondock_workers.hosting.environment import replica_environment
from neurondock_workers.hosting.memory import MIB, smaps_rollup
from neurondock_workers.hosting.process import ReplicaProcess
from neurondock_workers.hosting.standby import StandbyPool

FIELDS = ("Rss", "Pss", "Shared_Clean", "Private_Clean", "Private_Dirty", "Anonymous")


def build_model(path: Path, layers: int) -> None:
    """Save an MLP of ``layers`` 1024x1024 Linear layers as TorchScript."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(layers)]).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(model, torch.zeros(1, 1024)).save(str(path))


def run(root: Path, model_file: Path, replicas: int, share: bool) -> tuple[list[dict[str, int]], list[np.ndarray]]:
    settings = Settings(data_dir=root / "data", share_weights=share).resolved()
    weights_dir = settings.data_dir / "cache" / "weights"
    procs: list[ReplicaProcess] = []
    try:
        for i in range(replicas):
            model_dir = root / f"replica-{i}" / "model"
            model_dir.mkdir(parents=True)
            shutil.copy(model_file, model_dir / "model.pt")
            env = replica_environment(settings, {}, model_dir, i, None, "measure", weights_dir)
            proc = ReplicaProcess(i, model_dir, model_dir.parent / "replica.log", env)
            proc.start()
            procs.append(proc)
        outputs = []
        for proc in procs:
            address = proc.wait_ready(300)
            assert address is not None
            outputs.append(predict_npy(address, proc.channel_key, np.ones((2, 1024), dtype=np.float32)))
        time.sleep(0.5)
        return [smaps_rollup(proc.pid or 0) for proc in procs], outputs
    finally:
        for proc in procs:
            proc.terminate(10)


def report(title: str, rows: list[dict[str, int]]) -> None:
    print(f"\n{title}")
    print("  process   " + " ".join(f"{f:>14}" for f in FIELDS))
    for i, row in enumerate(rows):
        print(f"  replica {i} " + " ".join(f"{row.get(f, 0) / MIB:>11.1f} MiB" for f in FIELDS))
    total = {f: sum(r.get(f, 0) for r in rows) for f in FIELDS}
    print("  sum       " + " ".join(f"{total[f] / MIB:>11.1f} MiB" for f in FIELDS))


def measure_standby(root: Path) -> dict[str, int]:
    settings = Settings(data_dir=root / "standby-data").resolved()
    env = replica_environment(settings, {}, settings.replicas_dir, 0)
    pool = StandbyPool(env, root / "standby", size=1)
    pool.fill()
    try:
        wait_for(lambda: pool.warm_count() >= 1, 120, what="a warm standby")
        time.sleep(0.5)
        proc = pool.take(env)
        assert proc is not None
        rollup = smaps_rollup(proc.pid)
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(10)
        return rollup
    finally:
        pool.close()


def measure_starts(root: Path, model_file: Path, replicas: int) -> tuple[float, float, int]:
    """Return seconds until ``replicas`` replicas started together are all ready: cold, then from a full pool."""
    settings = Settings(data_dir=root / "starts-data").resolved()

    def start_all(tag: str) -> float:
        procs = []
        started = time.monotonic()
        for i in range(replicas):
            model_dir = root / f"{tag}-{i}" / "model"
            model_dir.mkdir(parents=True)
            shutil.copy(model_file, model_dir / "model.pt")
            env = replica_environment(settings, {}, model_dir, i)
            proc = ReplicaProcess(i, model_dir, model_dir.parent / "replica.log", env)
            proc.start()
            procs.append(proc)
        for proc in procs:
            proc.wait_ready(300)
        elapsed = time.monotonic() - started
        for proc in procs:
            proc.terminate(10)
        return elapsed

    cold = start_all("cold")
    pool = StandbyPool(replica_environment(settings, {}, settings.replicas_dir, 0), root / "pool", size=replicas)
    pool.fill()
    try:
        while pool.warm_count() < replicas:
            time.sleep(0.05)
        ReplicaProcess.standby_pool = pool
        warm = start_all("warm")
    finally:
        ReplicaProcess.standby_pool = None
        pool.close()
    return cold, warm, pool.taken_warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--layers", type=int, default=12, help="1024x1024 Linear layers, 4 MiB each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nd-mem-") as tmp:
        root = Path(tmp)
        model_file = root / "model.pt"
        build_model(model_file, args.layers)
        print(f"model: {model_file.stat().st_size / MIB:.1f} MiB TorchScript, {args.replicas} replicas")
        private, private_out = run(root / "private", model_file, args.replicas, share=False)
        report("weights private (NEURONDOCK_SHARE_WEIGHTS=0)", private)
        shared, shared_out = run(root / "shared", model_file, args.replicas, share=True)
        report("weights shared (default)", shared)
        same = all(np.array_equal(a, b) for a, b in zip(private_out, shared_out, strict=True))
        print(f"\noutputs identical with and without sharing: {same}")
        saved = sum(r["Pss"] for r in private) - sum(r["Pss"] for r in shared)
        print(f"Pss saved by sharing, {args.replicas} replicas: {saved / MIB:.1f} MiB")
        standby = measure_standby(root)
        report("one warm standby interpreter (torch imported, no model)", [standby])
        cold, warm, taken_warm = measure_starts(root, model_file, args.replicas)
        print(
            f"\n{args.replicas} replicas started together, all ready after: cold {cold:.2f} s; "
            f"from a pool of {args.replicas} ({taken_warm} taken warm) {warm:.2f} s"
        )


if __name__ == "__main__":
    main()
