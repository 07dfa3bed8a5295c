"""Child-process entry point: `python -m neurondock_workers.compiler._child request.json result.json`."""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

from neurondock_workers.exiting import exit_now


def _apply_limits(limits: dict[str, Any]) -> None:
    # Limits go on before torch is imported so the allocator and thread pools live inside them.
    memory = limits.get("memory_bytes")
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (int(memory), int(memory)))
    cpu = limits.get("cpu_seconds")
    if cpu:
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu) + 5))
    processes = limits.get("processes")
    if processes:
        resource.setrlimit(resource.RLIMIT_NPROC, (int(processes), int(processes)))


def _write(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, default=str))
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    """Run one compile described by a request file and write the outcome as JSON."""
    request_path, result_path = Path(argv[1]), Path(argv[2])
    spec = json.loads(request_path.read_text())
    _apply_limits(spec.get("limits") or {})
    request = spec["request"]
    from .errors import CompilationError, CompilerError, CompileResourceError

    try:
        import torch

        torch.set_num_threads(max(1, int(request.get("torch_threads") or 1)))
        from ._cache import CompileCache
        from ._compile import compile_model

        cache = CompileCache(Path(request["cache_dir"])) if request.get("cache_dir") else None
        result = compile_model(
            request["model_path"],
            request["input_config"],
            request.get("target", "ml_inf1"),
            request.get("compiler_options"),
            request["workdir"],
            cache=cache,
            measure_budget_s=float(request.get("measure_budget_s", 1.5)),
        )
        _write(result_path, {"ok": True, "result": result.to_dict()})
        return 0
    except CompilerError as exc:
        _write(result_path, {"ok": False, "error": exc.to_dict()})
        return 1
    except MemoryError:
        limit = (spec.get("limits") or {}).get("memory_bytes")
        err = CompileResourceError(resource="memory", limit=f"{limit / 1024**3:.1f} GiB" if limit else "host memory")
        _write(result_path, {"ok": False, "error": err.to_dict()})
        return 1
    except Exception as exc:  # anything else is Neo's "unexpected error", with the cause attached
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        unexpected = CompilationError(
            reason="There was an unexpected error during compilation, check your inputs and try "
            f"again in a few minutes. ({type(exc).__name__}: {detail})"
        )
        _write(result_path, {"ok": False, "error": unexpected.to_dict()})
        return 2


if __name__ == "__main__":
    exit_now(main(sys.argv))
