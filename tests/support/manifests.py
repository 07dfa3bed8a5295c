"""Compile reports written by hand, for tests of what reads a compiled artifact's manifest.json.

They carry only what ``CompiledManifest`` reads; a real compile writes much more (``docs/compiler.md``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def compile_report(
    *,
    target: str = "ml_inf1",
    inputs: list[tuple[str, list[int], str]] | None = None,
    outputs: list[tuple[list[int], str]] | None = None,
    dynamic_batch: bool = False,
    cores: int = 1,
    device_bytes: int = 0,
    inf1_latency_ms: float | None = None,
) -> dict[str, Any]:
    """Return a minimal compile report: static shapes, batch, cores, device memory, an optional projection."""
    inputs = inputs if inputs is not None else [("input0", [1, 4], "float32")]
    outputs = outputs if outputs is not None else [([1, 3], "float32")]
    report: dict[str, Any] = {
        "emulated": True,
        "compiler": {"name": "neurondock-neuron-emu", "version": "test"},
        "target": target,
        "example_inputs": {"inputs": [{"name": n, "shape": s, "dtype": d} for n, s, d in inputs]},
        "resources": {
            "static_shapes": {
                "inputs": [{"shape": s, "dtype": d} for _, s, d in inputs],
                "outputs": [{"shape": s, "dtype": d} for s, d in outputs],
            },
            "dynamic_batch_size": dynamic_batch,
            "dynamic_dims": [0] if dynamic_batch else [],
            "compiled_batch_size": inputs[0][1][0],
            "neuroncores_per_replica": cores,
            "device_memory_per_replica_bytes": device_bytes,
        },
        "execution": {"load_transform": "none"},
    }
    if inf1_latency_ms is not None:
        report["projection"] = {
            "inf1": [{"instance_type": "ml.inf1.xlarge", "fits": True, "latency_ms": inf1_latency_ms}],
            "cpu_segments_measured": [],
        }
    return report


def write_manifest(model_dir: Path, **kwargs: Any) -> Path:
    """Write ``compile_report(**kwargs)`` as ``model_dir/manifest.json``; return ``model_dir``."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "manifest.json").write_text(json.dumps(compile_report(**kwargs)))
    return model_dir
