"""Resource estimates: constant bytes, device memory per replica, AWS's pipeline-core and batch-size rules."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from neurondock_platform import catalog

from ._grammar import CompilerOptions
from ._graph import TensorMeta
from ._partition import PartitionPlan
from ._profile import WorkloadProfile

# Assumptions (not published for Inf1); every one is labelled in the report.
RUNTIME_OVERHEAD_BYTES = 32 * 1024**2
SEPARATE_WEIGHTS_BYTES = 1.9e9  # torch-neuron's separate_weights threshold (protobuf's 2 GB limit)
# AWS's pipeline sizing rule: four NeuronCores per 2e7 weights (docs/compiler.md "Resources").
PIPELINE_WEIGHTS_PER_CORE_GROUP = 2e7


def suggested_pipeline_cores(weight_count: float) -> int:
    """Apply AWS's rule `neuroncore-pipeline-cores = 4 * round(num_weights / 2e7)` (at least 1)."""
    cores = 4 * round(weight_count / PIPELINE_WEIGHTS_PER_CORE_GROUP)
    return max(1, min(cores, catalog.MAX_PIPELINE_CORES))


def suggested_batch_size(flops_per_inference: float, weight_count: float, dtype_bytes: int = 2) -> int:
    """Apply AWS's roofline rule `ceil(0.5 * (PeakFLOPS/MemBW) / (FLOPs / (params * dtype_bytes)))`."""
    if flops_per_inference <= 0 or weight_count <= 0:
        return 1
    intensity = flops_per_inference / (weight_count * dtype_bytes)
    ratio = catalog.PEAK_FLOPS_PER_CHIP / catalog.DRAM_BYTES_PER_S_PER_CHIP
    return max(1, math.ceil(0.5 * ratio / intensity - 1e-9))


def estimate_resources(
    *,
    plan: PartitionPlan | None,
    neuron_profile: WorkloadProfile,
    constants_fp32_bytes: int,
    constants_after_cast_bytes: int,
    metas: Mapping[str, TensorMeta],
    input_metas: Sequence[TensorMeta],
    output_metas: Sequence[TensorMeta],
    options: CompilerOptions,
    batch: int,
) -> dict[str, Any]:
    """Return the report's resources section."""
    dtype_bytes = 2 if options.cast_dtype in ("bfloat16", "float16") else 4
    largest_activation = 0
    io_bytes = 0
    if plan is not None:
        for seg in plan.neuron_segments:
            for node in seg.nodes:
                for name in node.outputs:
                    meta = metas.get(name)
                    if meta is not None:
                        largest_activation = max(largest_activation, meta.numel * dtype_bytes)
            io_bytes += sum(metas[n].nbytes for n in seg.inputs + seg.outputs if n in metas)
    weights_on_device = int(neuron_profile.weight_bytes)
    # Two live activations (producer and consumer) bound the scratch a straight-line graph needs.
    device_bytes = weights_on_device + io_bytes + 2 * largest_activation + RUNTIME_OVERHEAD_BYTES
    cores_per_replica = options.pipeline_cores
    per_chip = catalog.DEVICE_MEMORY_BYTES_PER_CHIP
    per_core_bytes = device_bytes / cores_per_replica
    replicas_per_chip_by_memory = int(per_chip // max(device_bytes, 1)) if cores_per_replica <= 4 else 0
    flops_per_inference = neuron_profile.total_flops / max(batch, 1)
    return {
        "label": "estimate",
        "constant_bytes_fp32": constants_fp32_bytes,
        "constant_bytes_after_cast": constants_after_cast_bytes,
        "weights_on_device_bytes": weights_on_device,
        "weights_on_device_count": int(neuron_profile.weight_count),
        "device_memory_per_replica_bytes": device_bytes,
        "device_memory_breakdown": {
            "weights": weights_on_device,
            "io_buffers": io_bytes,
            "activation_scratch": 2 * largest_activation,
            "runtime_overhead_assumed": RUNTIME_OVERHEAD_BYTES,
        },
        "device_memory_per_chip_bytes": per_chip,
        "fits_one_chip": per_core_bytes * min(cores_per_replica, catalog.NEURON_CORES_PER_CHIP) <= per_chip,
        "replicas_per_chip": min(
            catalog.NEURON_CORES_PER_CHIP // min(cores_per_replica, catalog.NEURON_CORES_PER_CHIP),
            replicas_per_chip_by_memory,
        )
        if cores_per_replica <= 4
        else 0,
        "neuroncores_per_replica": cores_per_replica,
        "separate_weights_required": constants_fp32_bytes > SEPARATE_WEIGHTS_BYTES,
        "suggested_pipeline_cores": suggested_pipeline_cores(neuron_profile.weight_count),
        "suggested_pipeline_cores_rule": "4 * round(num_weights / 2e7) (aws-neuron-sdk neuroncore-pipeline.rst)",
        "suggested_batch_size": suggested_batch_size(flops_per_inference, neuron_profile.weight_count, dtype_bytes),
        "suggested_batch_size_rule": "ceil(0.5 * (64 TFLOPS / 50 GB/s) / (FLOPs / (params * dtype_bytes))) "
        "(aws-neuron-sdk neuroncore-batching.rst)",
        "flops_per_inference": flops_per_inference,
        "static_shapes": {
            "inputs": [m.to_dict() for m in input_metas],
            "outputs": [m.to_dict() for m in output_metas],
        },
        "dynamic_batch_size": options.dynamic_batch_size,
        "dynamic_dims": [0] if options.dynamic_batch_size else [],
        "compiled_batch_size": batch,
    }
