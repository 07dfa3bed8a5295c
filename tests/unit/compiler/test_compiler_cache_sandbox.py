"""The compile cache, and compiles in a killable child process with time and memory limits."""

from __future__ import annotations

import os
import time

import pytest

from neurondock_workers.compiler import (
    CompileCache,
    CompileProcess,
    CompileRequest,
    CompileResourceError,
    CompileStoppedError,
    CompileTimeoutError,
    NothingOnNeuronError,
    compile_model,
    run_compile_sandboxed,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; /proc tells it apart.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def test_same_input_and_options_hit_the_cache(zoo, tmp_path):
    path, config = zoo.cnn()
    cache = CompileCache(tmp_path / "cache")
    first = compile_model(path, config, "ml_inf1", None, tmp_path / "a", cache=cache, measure_budget_s=0.2)
    started = time.perf_counter()
    second = compile_model(path, config, "ml_inf1", None, tmp_path / "b", cache=cache, measure_budget_s=0.2)
    elapsed = time.perf_counter() - started
    assert not first.cache_hit and second.cache_hit
    assert elapsed < 1.0
    assert second.artifact_path.read_bytes() == first.artifact_path.read_bytes()
    assert second.artifact_path.parent == tmp_path / "b"
    assert second.report == first.report
    other = compile_model(
        path, config, "ml_inf1", "--fast-math none", tmp_path / "c", cache=cache, measure_budget_s=0.2
    )
    assert not other.cache_hit and other.cache_key != first.cache_key


def test_cache_key_covers_shapes_target_and_version():
    from neurondock_workers.compiler import CompilerOptions, parse_data_input_config

    base = CompileCache.key("abc", CompilerOptions(), parse_data_input_config([[1, 3]]), "ml_inf1", "0.1.0")
    assert base != CompileCache.key("abc", CompilerOptions(), parse_data_input_config([[2, 3]]), "ml_inf1", "0.1.0")
    assert base != CompileCache.key("abc", CompilerOptions(), parse_data_input_config([[1, 3]]), "ml_c5", "0.1.0")
    assert base != CompileCache.key("abc", CompilerOptions(), parse_data_input_config([[1, 3]]), "ml_inf1", "0.2.0")


def test_sandboxed_compile_returns_the_result(zoo, tmp_path):
    path, config = zoo.linear_relu()
    request = CompileRequest(str(path), config, str(tmp_path / "w"), measure_budget_s=0.1)
    result = run_compile_sandboxed(request, max_runtime_s=120, memory_limit_bytes=4 * 1024**3)
    assert result.artifact_path.is_file() and result.report["emulated"] is True
    assert result.report["execution"]["threads"] == 1


def test_sandboxed_errors_keep_their_type(zoo, tmp_path):
    path, config = zoo.gather_only()
    request = CompileRequest(str(path), config, str(tmp_path / "w"))
    with pytest.raises(NothingOnNeuronError) as info:
        run_compile_sandboxed(request, max_runtime_s=120)
    assert "aborting trace!" in info.value.failure_reason


def test_max_runtime_kills_the_child(zoo, tmp_path):
    path, config = zoo.cnn()
    process = CompileProcess(CompileRequest(str(path), config, str(tmp_path / "w")), max_runtime_s=0.5).start()
    with pytest.raises(CompileTimeoutError) as info:
        process.wait()
    assert "MaxRuntimeInSeconds (0.5 s)" in info.value.failure_reason
    assert process.pid is not None and not _alive(process.pid)


def test_stop_compilation_job(zoo, tmp_path):
    path, config = zoo.cnn()
    process = CompileProcess(CompileRequest(str(path), config, str(tmp_path / "w"))).start()
    assert process.running()
    process.stop()
    with pytest.raises(CompileStoppedError):
        process.wait()
    assert process.pid is not None and not _alive(process.pid)


def test_memory_limit_ends_as_a_resource_error(zoo, tmp_path):
    path, _ = zoo.cnn()
    # 16 images of 2048x2048: the stem's activations alone need several GiB.
    request = CompileRequest(str(path), {"input0": [16, 3, 2048, 2048]}, str(tmp_path / "w"))
    with pytest.raises(CompileResourceError) as info:
        run_compile_sandboxed(request, max_runtime_s=120, memory_limit_bytes=2 * 1024**3)
    assert "memory" in info.value.failure_reason
