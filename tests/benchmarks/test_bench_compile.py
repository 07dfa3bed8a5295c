"""Benchmark: compiling a ResNet-18-class CNN for ml_inf1 as a compilation job does, and what it buys here.

Prints, measured in this run: the sandboxed compile time (child process, as a job runs it), the
cache-hit time (the job runner's lookup, no child), compiled vs uncompiled CPU latency as a ratio, and
the projection's calibration table (projected vs AWS's published inf1 figures, with residuals).
Asserts only that everything was measured, never absolute times. The full run compiles torchvision's
ResNet-18 layout at 224x224 (``python -m pytest tests/benchmarks/test_bench_compile.py -m benchmark -s``);
the default suite runs a quarter-width smoke at 64x64.
"""

from __future__ import annotations

import io
import json
import statistics
import tarfile
import time
import warnings

import pytest

from tests.support.torch_models import resnet18

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

GOAL_COMPILE_S = 60.0
GOAL_CACHE_HIT_S = 1.0


def _p50_ms(fn, x, iterations: int) -> float:
    import torch

    with torch.inference_mode():
        for _ in range(3):
            fn(x)
        samples = []
        for _ in range(iterations):
            started = time.perf_counter()
            fn(x)
            samples.append((time.perf_counter() - started) * 1e3)
    return statistics.median(samples)


@pytest.mark.parametrize(
    "mode", [pytest.param("smoke"), pytest.param("full", marks=[pytest.mark.benchmark, pytest.mark.slow])]
)
def test_compile_time_cache_hit_latency_ratio_and_calibration(tmp_path, mode):
    import torch

    from neurondock_workers.compile_job import lookup_cached
    from neurondock_workers.compiler import CompileRequest, load_compiled, run_compile_sandboxed

    full = mode == "full"
    torch.set_num_threads(1)
    size = 224 if full else 64
    model = resnet18((64, 128, 256, 512) if full else (16, 32, 64, 128), 1000 if full else 10)
    example = torch.randn(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
    params = sum(p.numel() for p in model.parameters())
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("model.pt")
        info.size = len(buffer.getvalue())
        tar.addfile(info, io.BytesIO(buffer.getvalue()))
    config = json.dumps({"input0": [1, 3, size, size]})
    cache = tmp_path / "cache"

    started = time.perf_counter()
    result = run_compile_sandboxed(
        CompileRequest(
            str(archive), config, str(tmp_path / "job"), cache_dir=str(cache), measure_budget_s=1.5 if full else 0.3
        ),
        max_runtime_s=900,
    )
    compile_s = time.perf_counter() - started

    started = time.perf_counter()
    hit = lookup_cached(archive, config, None, "ml_inf1", cache, tmp_path / "hit")
    hit_s = time.perf_counter() - started
    assert hit is not None and hit.cache_hit
    assert hit.artifact_path.read_bytes() == result.artifact_path.read_bytes()

    with tarfile.open(result.artifact_path, "r:gz") as tar:
        tar.extractall(tmp_path / "artifact", filter="data")
    compiled = load_compiled(tmp_path / "artifact")
    iterations = 50 if full else 30
    compiled_ms = _p50_ms(compiled, example, iterations)
    uncompiled_ms = _p50_ms(traced, example, iterations)

    report = result.report
    execution = report["execution"]
    calibration = report["projection"]["calibration"]
    assert report["emulated"] is True
    assert compiled_ms > 0 and uncompiled_ms > 0
    assert calibration["rows"]

    print(f"\n== compile benchmark ({mode}): ResNet-18 layout {size}x{size}, {params / 1e6:.2f} M parameters ==")
    print(
        f"sandboxed compile (child process, as a job): {compile_s:.2f} s "
        f"(compiler stages {sum(result.stage_seconds.values()):.2f} s; goal < {GOAL_COMPILE_S:.0f} s)"
    )
    print(f"cache hit (job runner lookup, no child):   {hit_s * 1e3:.0f} ms (goal < {GOAL_CACHE_HIT_S:.0f} s)")
    print(
        f"CPU latency p50, 1 thread, measured here: compiled {compiled_ms:.2f} ms ({execution['selected']}) vs "
        f"uncompiled {uncompiled_ms:.2f} ms -> ratio {uncompiled_ms / compiled_ms:.2f}x "
        f"(compiler's own measurement: {execution.get('speedup_vs_uncompiled')}x)"
    )
    print(f"calibration ({calibration['label']}; {calibration['source']}):")
    print(f"  {'benchmark':28} {'batch':>5} {'published/s':>12} {'projected/s':>12} {'residual':>9}")
    residuals = []
    for row in calibration["rows"]:
        residuals.append(abs(row["throughput_residual_pct"]))
        print(
            f"  {row['benchmark']:28} {row['batch']:>5} {row['published_throughput']:>12.1f} "
            f"{row['projected_throughput']:>12.1f} {row['throughput_residual_pct']:>+8.1f}%"
        )
    within = sum(1 for r in residuals if r <= 25.0)
    print(f"  within +/-25%: {within}/{len(residuals)} rows; max |residual| {max(residuals):.1f}%")
