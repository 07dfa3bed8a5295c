"""A neurondock-compiled artifact, loaded and run the way its runtime runs it.

An artifact compiled for ``ml_inf1`` keeps torch-neuron's static shapes: every input's shape and dtype
are fixed at compile time, dim 0 may vary only when compiled with ``--dynamic-batch-size``, and the
runtime runs dim 0 in compiled-batch chunks (``docs/runtime.md``, "Static shapes"). Anything else never
reaches a NeuronCore (``NRT_EXEC_BAD_INPUT``), so here it is a 400 that names the compiled shape. An
artifact compiled for ``ml_c5`` is optimised TorchScript for the CPU with no device shapes to enforce.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from neurondock_platform.compiled_manifest import CompiledManifest, CompiledTensor
from neurondock_workers.hosting.contract import InputShapeError


class CompiledModel(torch.nn.Module):
    """A model compiled for ``ml_inf1``: refuses inputs outside its static shapes, counts projected device time."""

    def __init__(
        self,
        module: Any,
        inputs: tuple[CompiledTensor, ...],
        dynamic_batch: bool,
        device_seconds: float | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.inputs = inputs
        self.dynamic_batch = dynamic_batch
        # The compile report's projected NeuronCore time per compiled batch (None: no projection).
        self.device_seconds = device_seconds
        self.compiled_batch = max(1, inputs[0].shape[0]) if inputs and inputs[0].shape else 1
        self.device_ns = 0
        self.last_device_us: int | None = None

    def expected(self) -> str:
        """Describe the compiled inputs, e.g. ``input0 [1, 3, 224, 224] float32``."""
        batch = " (any size in dim 0)" if self.dynamic_batch else ""
        return ", ".join(spec.describe() for spec in self.inputs) + batch

    def check(self, args: tuple[Any, ...]) -> None:
        """Raise InputShapeError unless ``args`` match the compiled inputs."""
        hint = "" if self.dynamic_batch else " Compile with --dynamic-batch-size to accept any batch size in dim 0."
        if len(args) != len(self.inputs):
            raise InputShapeError(
                f"The model was compiled for Inferentia with {len(self.inputs)} input(s) "
                f"({self.expected()}) but received {len(args)}."
            )
        for arg, spec in zip(args, self.inputs, strict=True):
            shape = list(spec.shape)
            if not isinstance(arg, torch.Tensor):
                raise InputShapeError(
                    f"Input {spec.name} must be a tensor of shape {shape} {spec.dtype}, got {type(arg).__name__}."
                )
            got = list(arg.shape)
            fits = len(got) == len(shape) and all(
                g == s or (i == 0 and self.dynamic_batch) for i, (g, s) in enumerate(zip(got, shape, strict=True))
            )
            if not fits:
                raise InputShapeError(
                    f"Input {spec.name} has shape {got} but the model was compiled for Inferentia with the static "
                    f"shape {shape}{' (dim 0 dynamic)' if self.dynamic_batch else ''}; the Neuron runtime refuses "
                    f"other shapes (NRT_EXEC_BAD_INPUT, emulated).{hint}"
                )
            got_dtype = str(arg.dtype).removeprefix("torch.")
            if got_dtype != spec.dtype:
                raise InputShapeError(
                    f"Input {spec.name} has dtype {got_dtype} but the model was compiled for {spec.dtype} "
                    "(NRT_EXEC_BAD_INPUT, emulated). Send application/x-npy data of that dtype, or convert it "
                    "in input_fn."
                )

    def forward(self, *args: Any) -> Any:
        self.last_device_us = None
        self.check(args)
        out = self.module(*args)
        if self.device_seconds is not None:
            # The runtime runs dim 0 in compiled-batch chunks, padding the last one.
            rows = int(args[0].shape[0]) if args and args[0].dim() else 1
            chunks = -(-rows // self.compiled_batch)
            device_ns = int(chunks * self.device_seconds * 1e9)
            self.device_ns += device_ns
            self.last_device_us = device_ns // 1000
        return out


def load_compiled_model(model_dir: str | Path, manifest: CompiledManifest) -> Any:
    """Load an unpacked compiled artifact the way its runtime does (model.pt plus the chosen transform)."""
    from neurondock_workers.compiler import load_compiled

    module = load_compiled(Path(model_dir), manifest)
    if not manifest.on_inferentia:
        return module
    return CompiledModel(module, manifest.inputs, manifest.dynamic_batch, manifest.projected_device_seconds()).eval()
