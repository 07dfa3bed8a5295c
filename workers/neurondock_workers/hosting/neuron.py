"""Emulated Neuron runtime rules a replica must pass before it starts (``docs/runtime.md``, "Loading").

A replica owns the NeuronCores the reconciler assigned it (``NEURON_RT_VISIBLE_CORES``); a model
compiled for more cores than that, or more device memory than its chips have, fails to load with the
Neuron runtime's own wording.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neurondock_platform import catalog, compiled_manifest
from neurondock_platform.compiled_manifest import ManifestError


def core_range(cores: Sequence[int]) -> str:
    """Format core ids the way NEURON_RT_VISIBLE_CORES takes them: ``3`` or ``4-7``."""
    ordered = sorted(cores)
    if len(ordered) == 1:
        return str(ordered[0])
    return f"{ordered[0]}-{ordered[-1]}"


def _nrt_time() -> str:
    now = dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%b-%d %H:%M:%S.") + f"{now.microsecond // 100:04d}"


def check_fit(model_dir: Path, assignment: Mapping[str, Any]) -> str | None:
    """Return the Neuron runtime's error if the compiled model cannot load on its cores, else None."""
    cores = list(assignment.get("cores") or [])
    if not cores:
        return None
    try:
        manifest = compiled_manifest.load(model_dir)
    except ManifestError as exc:
        return f"The compiled model cannot be loaded: {exc}."
    if manifest is None:
        return None
    pid = os.getpid()
    needed_cores = manifest.neuroncores_per_replica
    if needed_cores > len(cores):
        return (
            f"{_nrt_time()} {pid}:{pid} ERROR   NRT:nrt_allocate_neuron_cores               NeuronCore(s) not "
            f"available - Requested:{needed_cores} Available:{len(cores)} (the model was compiled with "
            f"--neuroncore-pipeline-cores {needed_cores}; this replica owns nc{core_range(cores)}; set the "
            f"container Environment NEURON_RT_NUM_CORES={needed_cores}). RuntimeError: The PyTorch Neuron Runtime "
            "could not be initialized."
        )
    per_replica = manifest.device_memory_per_replica_bytes
    replicas_on_chip = int(assignment.get("replicas_per_instance") or 1)
    chips = max(1, len(assignment.get("chips") or []))
    total = catalog.DEVICE_MEMORY_BYTES_PER_CHIP * chips
    occupied = per_replica * (replicas_on_chip - 1)
    if per_replica and occupied + per_replica > total:
        available = max(0, total - occupied)
        return (
            f"neuron:mc_alloc: device mempool [{assignment.get('chips', [0])[0]}:0] total {total} occupied "
            f"{occupied} needed {per_replica} available {available} — NRT_RESOURCE (4): {replicas_on_chip} "
            f"replicas of {per_replica} bytes (estimated, from the compile report) do not fit the instance's "
            f"{chips} x {catalog.DEVICE_MEMORY_GIB_PER_CHIP} GiB of device memory. Use a larger instance type or "
            "NEURON_RT_NUM_CORES to run fewer, larger replicas."
        )
    return None
