"""Benchmark: server CPU per answer on the data plane, split between the API and the replica (issue 14).

A tiny MLP with batching on and off; wrk (the peer benchmark's one load generator, SigV4 headers
signed once and replayed) at c=8 and c=1 for a few interleaved rounds; the CPU time every process of
the platform's tree used in each window (``/proc``), divided by the answers. Prints the median of
the rounds per process, so a change can be read where it landed. Never asserts a figure: this
machine is shared (docs/measured.md, "Server CPU per answer on the data plane").

``python -m pytest tests/benchmarks/test_bench_cpu_per_answer.py -m benchmark -s``
(``NEURONDOCK_CPU_ROUNDS`` sets the rounds, 3 by default). Skips when wrk is missing.
"""

from __future__ import annotations

import os
import shutil
import statistics
from collections import defaultdict

import pytest

from tests.benchmarks.peers import run_wrk, wrk_script
from tests.benchmarks.procs import cpu_seconds, name, settle, tree
from tests.benchmarks.test_bench_dataplane import _deploy, npy, signed_headers
from tests.support.platform import Platform
from tests.support.torch_models import tiny_mlp

pytestmark = [pytest.mark.benchmark, pytest.mark.timeout(900)]


def test_server_cpu_per_answer(tmp_path):
    if not shutil.which("wrk"):
        pytest.skip("wrk is not installed (apt-get install wrk)")
    import numpy as np

    rounds = int(os.environ.get("NEURONDOCK_CPU_ROUNDS", "3"))
    plat = Platform(tmp_path / "nd")
    plat.start()
    try:
        body = npy(np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32))
        body_file = tmp_path / "body.npy"
        body_file.write_bytes(body)
        scripts = {}
        for key, env in {"on": {}, "off": {"NEURONDOCK_MAX_BATCH_SIZE": "1"}}.items():
            endpoint = _deploy(plat, tmp_path, tiny_mlp(), environment=env)
            path = f"/endpoints/{endpoint}/invocations"
            scripts[key] = (
                plat.url + path,
                wrk_script(tmp_path / f"{key}.lua", body_file, signed_headers(plat, path, body)),
            )
            run_wrk(*scripts[key], 8, 1.0)  # warm
        assert plat.process is not None
        root = plat.process.pid
        settle(root)
        rows = [("c=8, batching on", "on", 8), ("c=8, batching off", "off", 8), ("c=1", "off", 1)]
        # row → process label → per-round ms of CPU per answer; row → per-round (answers/s, p50 ms)
        cpu: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        load: dict[str, list[tuple[float, float]]] = defaultdict(list)
        load_average = os.getloadavg()[0]
        for _ in range(rounds):
            for label, key, connections in rows:
                pids = tree(root)
                before = cpu_seconds(pids)
                result = run_wrk(*scripts[key], connections, 4.0)
                after = cpu_seconds(pids)
                answered = max(1, result.requests - result.non_2xx)
                per: dict[str, float] = defaultdict(float)
                for pid in after.keys() & before.keys():
                    # Replicas and standby interpreters together: idle ones add (almost) nothing.
                    label_of = "replicas" if "standby" in name(pid) or "replica" in name(pid) else name(pid)
                    per[label_of] += (after[pid] - before[pid]) / answered * 1e3
                for process, ms in per.items():
                    cpu[label][process].append(ms)
                cpu[label]["total"].append(sum(per.values()))
                load[label].append((result.rate, result.p50_ms))
    finally:
        plat.stop()

    med = statistics.median
    print(f"\n[bench-cpu] {rounds} rounds of 4 s, medians; load average at start {load_average:.2f} on 2 shared cores")
    for label, _key, _c in rows:
        parts = sorted(((med(v), p) for p, v in cpu[label].items() if p != "total"), reverse=True)[:3]
        print(
            f"[bench-cpu] tiny MLP {label}: server CPU per answer {med(cpu[label]['total']):.3f} ms "
            f"({', '.join(f'{p} {v:.3f}' for v, p in parts)}); {med(r for r, _ in load[label]):.0f} answers/s, "
            f"p50 {med(p for _, p in load[label]):.3f} ms"
        )
    assert all(cpu[label]["total"] for label, _k, _c in rows)
