"""Trace one neurondock launch of the peer benchmark: when each step's log line first appears.

``python -m tests.benchmarks.launch_trace [runs]`` runs the launch row's
neurondock side (tests/benchmarks/test_bench_peers.py) and watches the platform's log files every
10 ms, printing seconds from the clock's start to each step, in order. The replica's log lines are
written when the agent activates a standby (after the model data is fetched and unpacked), and
``standby warm`` is when that standby finished importing torch (docs/measured.md).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.benchmarks.test_bench_peers import _launched_neurondock, _models

# (file under the data dir, text, step)
STEPS = [
    ("logs/host.log", "running (pid", "agent past the database gate"),
    ("logs/host.log", " ready.", "worker ready"),
    ("logs/host.log", "reconcile_endpoint[", "reconcile received"),
    ("replicas/1/replica.log", "starting from a standby", "model data unpacked, standby activated"),
    ("replicas/standby.log", "NEURONDOCK_STANDBY_READY", "standby warm (torch imported)"),
    ("replicas/1/replica.log", "weights shared", "model loaded"),
    ("replicas/1/replica.log", "LISTENING", "replica listening"),
    ("logs/host.log", ": InService", "InService set"),
]


def trace(home: Path, model_file: Path, body: bytes) -> dict[str, float]:
    """One launch; seconds from the start to each benchmark mark and each step of ``STEPS``."""
    seen: dict[str, float] = {}
    start: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.01):
            if not start:
                continue
            for name, text, step in STEPS:
                if step not in seen:
                    try:
                        if text in (home / "platform" / name).read_text(errors="replace"):
                            seen[step] = time.monotonic() - start[0]
                    except OSError:
                        pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with _launched_neurondock(home, model_file, body, on_start=start.append) as (_pid, marks):
            pass
    finally:
        done.set()
        watcher.join()
    return {**marks, **seen}


def main(runs: int) -> None:
    import torch

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="launch-trace-"))
    _net, model_file, body = _models(tmp)["resnet"]
    for run in range(runs):
        load = os.getloadavg()[0]
        steps = trace(tmp / f"run{run}", model_file, body)
        ordered = ", ".join(f"{step} {at:.2f}" for step, at in sorted(steps.items(), key=lambda kv: kv[1]))
        print(f"run {run}, load {load:.2f}: {ordered}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
