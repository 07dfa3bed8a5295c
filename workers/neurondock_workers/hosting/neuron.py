"""Emulated Neuron runtime rules a replica must pass before it starts (inferentia.md §3.2, §3.4, §7.3).

A replica owns the NeuronCores the reconciler assigned it (``NEURON_RT_VISIBLE_CORES``); a model
compiled for more cores than that, or more device memory than its chips have, fails to load with the
Neuron runtime's own wording.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEVICE_MEMORY_PER_CHIP = 8 * 1024**3
CORES_PER_CHIP = 4
MANIFEST = "manifest.json"


def core_range(cores: Sequence[int]) -> str:
    """Format core ids the way NEURON_RT_VISIBLE_CORES takes them: ``3`` or ``4-7``."""
    ordered = sorted(cores)
    if len(ordered) == 1:
        return str(ordered[0])
    return f"{ordered[0]}-{ordered[-1]}"


def _nrt_time() -> str:
    now = dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%b-%d %H:%M:%S.") + f"{now.microsecond // 100:04d}"


def _manifest(model_dir: Path) -> dict[str, Any] | None:
    path = model_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_fit(model_dir: Path, assignment: Mapping[str, Any]) -> str | None:
    """Return the Neuron runtime's error if the compiled model cannot load on its cores, else None."""
    cores = list(assignment.get("cores") or [])
    if not cores:
        return None
    manifest = _manifest(model_dir)
    if manifest is None:
        return None
    resources = manifest.get("resources") or manifest.get("report", {}).get("resources") or {}
    pid = os.getpid()
    needed_cores = int(resources.get("neuroncores_per_replica") or 1)
    if needed_cores > len(cores):
        return (
            f"{_nrt_time()} {pid}:{pid} ERROR   NRT:nrt_allocate_neuron_cores               NeuronCore(s) not "
            f"available - Requested:{needed_cores} Available:{len(cores)} (the model was compiled with "
            f"--neuroncore-pipeline-cores {needed_cores}; this replica owns nc{core_range(cores)}; set the "
            f"container Environment NEURON_RT_NUM_CORES={needed_cores}). RuntimeError: The PyTorch Neuron Runtime "
            "could not be initialized."
        )
    per_replica = int(resources.get("device_memory_per_replica_bytes") or 0)
    replicas_on_chip = int(assignment.get("replicas_per_instance") or 1)
    chips = max(1, len(assignment.get("chips") or []))
    total = DEVICE_MEMORY_PER_CHIP * chips
    occupied = per_replica * (replicas_on_chip - 1)
    if per_replica and occupied + per_replica > total:
        available = max(0, total - occupied)
        return (
            f"neuron:mc_alloc: device mempool [{assignment.get('chips', [0])[0]}:0] total {total} occupied "
            f"{occupied} needed {per_replica} available {available} — NRT_RESOURCE (4): {replicas_on_chip} "
            f"replicas of {per_replica} bytes (estimated, from the compile report) do not fit the instance's "
            f"{chips} x 8 GiB of device memory. Use a larger instance type or NEURON_RT_NUM_CORES to run fewer, "
            "larger replicas."
        )
    return None
