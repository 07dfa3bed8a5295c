"""Benchmark: neurondock beside TorchServe (the server in AWS's SageMaker PyTorch containers), one run.

Both serve the same TorchScript files (a tiny MLP, and ResNet-18 built in code at 224×224 with a
602 KB float32 NPY body) with one model worker and one intra-op thread each; wrk (Debian's) is the
one load generator for both, with neurondock's SigV4 headers signed once and replayed (ml.c5.large).
"Batching on" is TorchServe's batchSize 8 / maxBatchDelay 5 ms beside neurondock's up to 8:
opportunistic, its default, for the tiny MLP (which runs inline, where no delay applies), and with
``NEURONDOCK_MAX_BATCH_DELAY_MS=5`` for ResNet-18; "off" is ``NEURONDOCK_MAX_BATCH_SIZE=1`` beside
batchSize 1. Each ResNet-18 window is divided by a raw in-process loop measured right before and
after that window, and the row with batching on prints neurondock's batch sizes. Rounds are interleaved (the server
order alternates) and every row prints the median and the spread of the
rounds, and neurondock ÷ TorchServe. Also: launch → first ResNet-18 prediction, RSS and PSS of a
fresh one-endpoint platform (/proc/<pid>/smaps_rollup over the whole process tree), idle CPU, and
server CPU per answer. Never asserts a figure: this machine is shared (docs/measured.md).

``python -m pytest tests/benchmarks/test_bench_peers.py -m benchmark -s`` (``NEURONDOCK_PEER_ROUNDS``
sets the rounds, 3 by default; ``-k launch`` runs only the launch, memory and idle rows, ``-k speed`` only
the load rows, and ``NEURONDOCK_PEER_ROWS`` keeps only the load rows whose label contains it, e.g.
``"ResNet-18 c=8"`` for the two ResNet-18 rows at c=8). Skips with the reason when TorchServe, Java or wrk
is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.benchmarks.peers import TorchServe, WrkResult, run_wrk, torchserve_missing, wrk_script
from tests.benchmarks.procs import cpu_seconds, cpu_share, jit_seconds, memory_by_process, memory_mb, settle, tree
from tests.benchmarks.test_bench_dataplane import IMAGE, _deploy, npy, raw_loop, signed_headers
from tests.support.platform import Platform
from tests.support.torch_models import resnet18, tiny_mlp
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.benchmark, pytest.mark.timeout(2400)]

# DescribeEndpoint at TorchServe's readiness cadence (a prediction tried every 20 ms, tests.support.waiting).
LAUNCH_WAIT = {"Delay": 0.02, "MaxAttempts": 6000}


# The unmeasured load on each row before the rounds start: windows of this many seconds, TorchServe's
# repeated (up to WARM_UP_WINDOWS) until its JIT compiler threads use under JIT_QUIET of its CPU.
WARM_UP_SECONDS = 3.0
WARM_UP_WINDOWS = 20
JIT_QUIET = 0.03

# TorchServe's maxBatchDelay, and neurondock's for ResNet-18 with batching on: once the model is free
# with fewer than 8 requests queued, it waits up to this long for more (docs/runtime.md, "Batching").
BATCH_DELAY_MS = 5
BATCH_DELAY = {"NEURONDOCK_MAX_BATCH_DELAY_MS": str(BATCH_DELAY_MS)}


def _batch_sizes(platform: Platform, endpoint: str) -> dict[int, int]:
    """Executions so far by requests per execution (the BatchSize buckets of /metrics, de-accumulated)."""
    pattern = rf'^BatchSize_bucket{{[^}}]*EndpointName="{endpoint}"[^}}]*le="(\d+)"}} (\S+)$'
    cumulative = sorted((int(le), float(n)) for le, n in re.findall(pattern, platform.metrics()[2], re.M))
    out, below = {}, 0.0
    for le, n in cumulative:
        out[le] = int(n - below)
        below = n
    return out


def _bucket(histogram: dict[int, int], bound: int) -> str:
    """``"3–4: 12"``: a bucket of ``_batch_sizes`` named by the sizes it holds."""
    lower = max([b for b in histogram if b < bound], default=0) + 1
    return f"{bound if lower == bound else f'{lower}–{bound}'}: {histogram[bound]}"


def _models(tmp: Path) -> dict[str, tuple[Any, Path, bytes]]:
    """name → (TorchScript module, its file, one NPY request body)."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    net = torch.jit.trace(resnet18().eval(), torch.randn(1, 3, 224, 224))
    out = {}
    for name, module, shape in (("mlp", tiny_mlp(), (1, 16)), ("resnet", net, (1, 3, 224, 224))):
        path = tmp / f"{name}.pt"
        torch.jit.save(module, str(path))
        body = npy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
        out[name] = (module, path, body)
    return out


def _invoke_status(platform: Platform, name: str, body: bytes) -> int:
    path = f"/endpoints/{name}/invocations"
    return _post_status(platform.port, path, body, signed_headers(platform, path, body))


def _post_status(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return int(response.status)
    finally:
        conn.close()


def _spread(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def _rounds_or_skip() -> int:
    """Skip when TorchServe or wrk is missing; else pin torch here to one thread, as both servers run, and
    return the number of interleaved rounds (``NEURONDOCK_PEER_ROUNDS``)."""
    reason = torchserve_missing() or (None if shutil.which("wrk") else "wrk is not installed (apt-get install wrk)")
    if reason:
        pytest.skip(reason)
    import torch

    torch.set_num_threads(1)
    return int(os.environ.get("NEURONDOCK_PEER_ROUNDS", "3"))


def _reporter(tag: str = "bench-peers") -> Callable[[str], None]:
    def say(text: str) -> None:
        print(f"[{tag}] {text}", flush=True)

    return say


@contextlib.contextmanager
def _launched_neurondock(
    home: Path, model_file: Path, body: bytes, on_start: Callable[[float], None] | None = None
) -> Iterator[tuple[int, dict[str, float]]]:
    """Pack the model, run `up`, deploy and predict once; yield (root pid, seconds from the start to each step).

    As for TorchServe, what the client library costs before its first call is not the server's launch:
    the boto3 clients are built and the invocation signed before the clock starts (the port and keys
    are fixed before `up`). The model is packed first, from the same TorchScript file TorchServe
    archives, with the same deflate (zlib) at the same level: 6, TorchServe's archiver's (a ZipFile's
    default) and that of the `tar czf` SageMaker documents (gzip's default; GNU gzip itself deflates
    0.3-0.5 s slower here). InService is awaited at TorchServe's readiness cadence, 20 ms
    (docs/measured.md). ``on_start`` is told the clock's start (``time.monotonic``), for a tracer.
    """
    marks: dict[str, float] = {}
    home.mkdir(parents=True)
    platform = Platform(home / "platform")
    name = "launch"
    sm, s3 = platform.client("sagemaker"), platform.client("s3")
    path = f"/endpoints/{name}/invocations"
    headers = signed_headers(platform, path, body)
    started = time.monotonic()
    if on_start is not None:
        on_start(started)
    archive = home / "model.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        tar.add(model_file, arcname=model_file.name)
    marks["model packed"] = time.monotonic() - started
    platform.start()
    try:
        marks["banner"] = time.monotonic() - started
        s3.create_bucket(Bucket=name)
        s3.upload_file(str(archive), name, "model.tar.gz")
        marks["uploaded"] = time.monotonic() - started
        container = {"Image": IMAGE, "ModelDataUrl": f"s3://{name}/model.tar.gz"}
        sm.create_model(ModelName=name, PrimaryContainer=container)
        variant = {
            "VariantName": "AllTraffic",
            "ModelName": name,
            "InitialInstanceCount": 1,
            "InstanceType": "ml.c5.large",
        }
        sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        marks["CreateEndpoint"] = time.monotonic() - started
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=LAUNCH_WAIT)
        marks["InService seen"] = time.monotonic() - started
        wait_for(lambda: _post_status(platform.port, path, body, headers) == 200, 120, what="the first prediction")
        marks["first prediction"] = time.monotonic() - started
        assert platform.process is not None
        yield platform.process.pid, marks
    finally:
        platform.stop()


@contextlib.contextmanager
def _launched_torchserve(home: Path, model_file: Path, body: bytes) -> Iterator[tuple[int, dict[str, float]]]:
    """Archive the model, start TorchServe, predict once; yield (root pid, seconds from the start to each step)."""
    marks: dict[str, float] = {}
    started = time.monotonic()
    server = TorchServe(home)
    server.archive("resnet", model_file)
    marks["model packed"] = time.monotonic() - started
    server.start({"resnet": 8})
    try:
        server.wait_ready(["resnet"], {"resnet": body})
        marks["first prediction"] = time.monotonic() - started
        assert server.process is not None
        yield server.process.pid, marks
    finally:
        server.stop()


def test_launch_beside_torchserve(tmp_path):
    """Launch → first ResNet-18 prediction, alternating which server goes first; RSS, PSS and idle CPU of round 0."""
    rounds = _rounds_or_skip()
    _net, model_file, body = _models(tmp_path)["resnet"]
    say = _reporter()
    say(f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (other work shares them)")
    launches: dict[str, list[dict[str, float]]] = {"neurondock": [], "TorchServe": []}
    fresh: dict[str, tuple[float, float]] = {}
    quiet: dict[str, tuple[float, float]] = {}
    idle: dict[str, float] = {}
    for r in range(rounds):
        for server in ["neurondock", "TorchServe"] if r % 2 == 0 else ["TorchServe", "neurondock"]:
            home = tmp_path / f"{server}-{r}"
            launched = (
                _launched_neurondock(home, model_file, body)
                if server == "neurondock"
                else _launched_torchserve(home, model_file, body)
            )
            with launched as (root, marks):
                launches[server].append(marks)
                say(f"round {r} {server}: " + ", ".join(f"{step} {at:.2f} s" for step, at in marks.items()))
                if r == 0:
                    fresh[server] = memory_mb(tree(root))
                    say(f"RSS/PSS MB by process fresh, {server}: {memory_by_process(root)}")
                    settle(root)
                    quiet[server] = memory_mb(tree(root))
                    say(f"RSS/PSS MB by process once quiet, {server}: {memory_by_process(root)}")
                    idle[server] = cpu_share(root, 10.0).total
    med = statistics.median
    nd = [m["first prediction"] for m in launches["neurondock"]]
    ts = [m["first prediction"] for m in launches["TorchServe"]]
    say(
        f"launch → first ResNet-18 prediction, {rounds} alternating rounds, median (min–max): neurondock "
        f"{_spread(nd)} s, TorchServe {_spread(ts)} s (ratio {med(nd) / med(ts):.2f}); each includes packing the "
        f"model first: {_spread([m['model packed'] for m in launches['neurondock']])} vs "
        f"{_spread([m['model packed'] for m in launches['TorchServe']])} s"
    )
    (nd_rss, nd_pss), (ts_rss, ts_pss) = fresh["neurondock"], fresh["TorchServe"]
    say(
        f"one ResNet-18 endpoint, fresh, whole process tree: RSS neurondock {nd_rss:.0f} MB vs TorchServe "
        f"{ts_rss:.0f} MB ({nd_rss / ts_rss:.2f}x); PSS {nd_pss:.0f} vs {ts_pss:.0f} MB ({nd_pss / ts_pss:.2f}x)"
    )
    (nd_rss, nd_pss), (ts_rss, ts_pss) = quiet["neurondock"], quiet["TorchServe"]
    say(
        f"… once quiet (no standby while a replica serves, unless NEURONDOCK_STANDBY_WHILE_SERVING=1): "
        f"RSS {nd_rss:.0f} vs {ts_rss:.0f} MB ({nd_rss / ts_rss:.2f}x); "
        f"PSS {nd_pss:.0f} vs {ts_pss:.0f} MB ({nd_pss / ts_pss:.2f}x)"
    )
    say(
        f"idle CPU, one endpoint, 10 s: neurondock {idle['neurondock']:.2f}% of a core, "
        f"TorchServe {idle['TorchServe']:.2f}%"
    )
    say(f"load average at end {os.getloadavg()[0]:.2f}")


def test_speed_beside_torchserve(tmp_path):
    """The load rows: tiny MLP and ResNet-18 at c=1 and c=8, batching on and off, interleaved rounds."""
    rounds = _rounds_or_skip()
    models = _models(tmp_path)
    say = _reporter()

    say(f"load average at start {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (other work shares them)")

    # --- both up side by side: the same four models on each ---------------------------------------------
    plat = Platform(tmp_path / "nd")
    plat.start()
    ts = TorchServe(tmp_path / "ts")
    try:
        endpoints = {
            "mlp_on": _deploy(plat, tmp_path, models["mlp"][0]),
            "mlp_off": _deploy(plat, tmp_path, models["mlp"][0], environment={"NEURONDOCK_MAX_BATCH_SIZE": "1"}),
            "resnet_on": _deploy(plat, tmp_path, models["resnet"][0], environment=BATCH_DELAY),
            "resnet_off": _deploy(plat, tmp_path, models["resnet"][0], environment={"NEURONDOCK_MAX_BATCH_SIZE": "1"}),
        }
        for key in endpoints:
            ts.archive(key, models[key.split("_")[0]][1])
        ts.start({"mlp_on": 8, "mlp_off": 1, "resnet_on": 8, "resnet_off": 1}, batch_delay_ms=BATCH_DELAY_MS)
        bodies = {key: models[key.split("_")[0]][2] for key in endpoints}
        ts.wait_ready(list(endpoints), bodies)
        assert plat.process is not None and ts.process is not None

        scripts: dict[tuple[str, str], tuple[str, Path]] = {}
        for key, name in endpoints.items():
            body_file = tmp_path / f"{key}.npy"
            body_file.write_bytes(bodies[key])
            path = f"/endpoints/{name}/invocations"
            wait_for(lambda n=name, k=key: _invoke_status(plat, n, bodies[k]) == 200, 60, what=f"{name} to serve")
            scripts["neurondock", key] = (
                plat.url + path,
                wrk_script(tmp_path / f"nd-{key}.lua", body_file, signed_headers(plat, path, bodies[key])),
            )
            scripts["TorchServe", key] = (
                ts.url(key),
                wrk_script(tmp_path / f"ts-{key}.lua", body_file, {"Content-Type": "application/x-npy"}),
            )
        roots = {"neurondock": plat.process.pid, "TorchServe": ts.process.pid}
        rows = [
            # c=1 on each server's unbatched model: TorchServe's batchSize 8 would hold a lone request 5 ms.
            ("tiny MLP c=1", "mlp_off", 1, 4.0),
            ("tiny MLP c=8, batching on", "mlp_on", 8, 4.0),
            ("tiny MLP c=8, batching off", "mlp_off", 8, 4.0),
            ("ResNet-18 c=1", "resnet_off", 1, 6.0),
            ("ResNet-18 c=8, batching on", "resnet_on", 8, 8.0),
            ("ResNet-18 c=8, batching off", "resnet_off", 8, 8.0),
        ]
        rows = [row for row in rows if os.environ.get("NEURONDOCK_PEER_ROWS", "") in row[0]]
        results: dict[tuple[str, str], list[tuple[WrkResult, float]]] = {}
        # The raw loop beside each ResNet-18 window: measured right before and right after that server's
        # window and averaged (raw, one server, raw, the other, raw), since this VM's speed drifts over
        # seconds (test_bench_dataplane.py), and a raw loop a whole other window away reads it at another speed.
        raw: dict[tuple[str, str], list[float]] = {}
        histogram: dict[int, int] = {}
        net, _file, resnet_body = models["resnet"]

        def raw_rate(connections: int) -> float:
            if connections == 1:
                return raw_loop(net, resnet_body, 1.5, decode=True)[0]
            return raw_loop(net, resnet_body, 1.5, decode=False, batch=8)[0]

        # Unmeasured load on each row first. TorchServe's JVM compiles its hot paths under load: on this
        # 2-core machine its C2 compiler thread took most of a core for the first ~15 s of load, and its
        # CPU per answer read 3-7x the settled figure (docs/measured.md, "TorchServe's JIT warm-up"),
        # so its windows repeat until the compiler threads are quiet. neurondock gets one window.
        ts_pids = tree(ts.process.pid)
        for label, key, connections, _seconds in rows:
            run_wrk(*scripts["neurondock", key], connections, WARM_UP_SECONDS)
            windows, jit = 0, 0.0
            while windows < WARM_UP_WINDOWS:
                jit_before, cpu_before = jit_seconds(ts_pids), cpu_seconds(ts_pids)
                run_wrk(*scripts["TorchServe", key], connections, WARM_UP_SECONDS)
                windows += 1
                cpu_after = cpu_seconds(ts_pids)
                cpu = sum(cpu_after[p] - cpu_before[p] for p in cpu_after if p in cpu_before)
                jit = (jit_seconds(ts_pids) - jit_before) / max(cpu, 1e-9)
                if jit < JIT_QUIET:
                    break
            say(f"warm-up {label}: TorchServe {windows} window(s) of {WARM_UP_SECONDS:g} s, JIT {jit:.1%} of CPU last")
        for r in range(rounds):
            order = ["neurondock", "TorchServe"] if r % 2 == 0 else ["TorchServe", "neurondock"]
            for label, key, connections, seconds in rows:
                ceiling = label.startswith("ResNet")
                before_raw = raw_rate(connections) if ceiling else 0.0
                before_batches = _batch_sizes(plat, endpoints["resnet_on"]) if key == "resnet_on" else {}
                for server in order:
                    url, script = scripts[server, key]
                    pids = tree(roots[server])
                    before = cpu_seconds(pids)
                    result = run_wrk(url, script, connections, seconds)
                    after = cpu_seconds(pids)
                    cpu = sum(after[p] - before[p] for p in after if p in before)
                    results.setdefault((server, label), []).append((result, cpu / max(1, result.answered) * 1e3))
                    if ceiling:
                        after_raw = raw_rate(connections)
                        raw.setdefault((server, label), []).append((before_raw + after_raw) / 2)
                        before_raw = after_raw
                if key == "resnet_on":
                    for size, count in _batch_sizes(plat, endpoints["resnet_on"]).items():
                        histogram[size] = histogram.get(size, 0) + count - before_batches.get(size, 0)
    finally:
        ts.stop()
        plat.stop()

    say(f"{rounds} interleaved rounds; median (min–max) of the rounds; ratio = neurondock ÷ TorchServe")
    if raw:
        say(
            "raw in-process ResNet-18 (batch 1 with NPY decode+encode beside c=1, batch 8 beside c=8), samples/s: "
            + "; ".join(f"beside {server} {label} {_spread(rates)}" for (server, label), rates in raw.items())
        )
    med = statistics.median
    for label, _key, connections, _seconds in rows:
        nd, tsr = results["neurondock", label], results["TorchServe", label]
        if connections == 1:
            a, b = [r.p50_ms for r, _ in nd], [r.p50_ms for r, _ in tsr]
            a99, b99 = [r.p99_ms for r, _ in nd], [r.p99_ms for r, _ in tsr]
            say(
                f"{label}: p50 neurondock {_spread(a)} ms, TorchServe {_spread(b)} ms (ratio {med(a) / med(b):.2f}); "
                f"p99 {_spread(a99)} vs {_spread(b99)} ms"
            )
        a = [r.answered / max(1e-9, r.requests / r.rate) for r, _ in nd]
        b = [r.answered / max(1e-9, r.requests / r.rate) for r, _ in tsr]
        refused = (sum(r.non_2xx for r, _ in nd), sum(r.non_2xx for r, _ in tsr))
        cpu_a, cpu_b = [c for _, c in nd], [c for _, c in tsr]
        ceiling = ""
        if label.startswith("ResNet"):
            # The median of the rounds' ratios, each round's rate over the raw loop measured beside it.
            ours = [x / y for x, y in zip(a, raw["neurondock", label], strict=True)]
            theirs = [x / y for x, y in zip(b, raw["TorchServe", label], strict=True)]
            ceiling = f"; ÷ raw batch-{8 if connections == 8 else 1} loop {_spread(ours)} vs {_spread(theirs)}"
        say(
            f"{label}: answers/s neurondock {_spread(a, '{:.1f}')}, TorchServe {_spread(b, '{:.1f}')} "
            f"(ratio {med(a) / max(1e-9, med(b)):.2f}); non-2xx {refused[0]} vs {refused[1]}; "
            f"server CPU per answer {_spread(cpu_a, '{:.3f}')} vs {_spread(cpu_b, '{:.3f}')} ms{ceiling}"
        )
    if histogram:
        say(
            "neurondock's ResNet-18 executions at c=8 with batching on, by requests per execution: "
            + ", ".join(_bucket(histogram, size) for size in sorted(histogram) if histogram[size])
        )
    assert results and all(r.requests > 0 for runs in results.values() for r, _ in runs)
    # no refusal below the job queue's depth (8 clients, 100 deep)
    assert all(r.non_2xx == 0 for label, _k, _c, _s in rows for r, _ in results["neurondock", label])
