"""What a replica can tell about its model's tensors: the answer to the ``metadata`` frame (OIP model metadata).

Three sources, best first (docs/oip.md, "Model metadata"):

- ``compiled``: a neurondock-compiled artifact's manifest names every input and output with its
  shape and dtype. For ``ml_inf1`` the shapes are static and ``enforced`` (the emulated Neuron runtime
  refuses anything else), dim 0 being ``-1`` only when compiled with a dynamic batch size; an
  ``ml_c5`` artifact is CPU TorchScript, whose dim 0 (the batch) varies and whose shapes nothing enforces.
- ``observed``: an uncompiled model's tensors as its first successful NPY invocation showed them (the
  request array and the answer array), with dim 0 as ``-1``: the batch, which the default handler and
  the batcher let vary. Input names come from the TorchScript signature when it has one argument.
- ``unknown``: nothing yet (an uncompiled model that has not answered an NPY request): no tensors are
  described rather than guessed ones.

Dtypes are named as NumPy and torch name them (``float32``, ``int64``, ``bool``, ``bytes`` for
fixed-width strings); the OIP front door maps them to OIP datatypes (``dataplane/oip.py``).
"""

from __future__ import annotations

import io
from typing import Any

from neurondock_platform import compiled_manifest
from neurondock_workers.hosting.contract import NPY, base_type

COMPILED = "compiled"
OBSERVED = "observed"
UNKNOWN = "unknown"


def _tensor(name: str, dtype: str, shape: tuple[int, ...] | list[int], batch_dynamic: bool) -> dict[str, Any]:
    return {
        "name": name,
        "dtype": dtype,
        "shape": [-1 if i == 0 and batch_dynamic else int(d) for i, d in enumerate(shape)],
    }


def _argument_names(model: Any) -> list[str] | None:
    schema = getattr(getattr(model, "forward", None), "schema", None)
    if schema is None:
        return None
    return [a.name for a in schema.arguments if a.name != "self"]


def describe(handler: Any, observed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``metadata`` answer for a loaded handler: platform, signature source, inputs and outputs."""
    try:
        manifest = compiled_manifest.load(getattr(handler, "model_dir", "."))
    except compiled_manifest.ManifestError:
        manifest = None
    if manifest is not None:
        dynamic = manifest.dynamic_batch or not manifest.on_inferentia
        return {
            "platform": "neurondock_inf1_emulated" if manifest.on_inferentia else "pytorch_torchscript",
            "signature": COMPILED,
            "enforced": manifest.on_inferentia,
            "inputs": [_tensor(t.name, t.dtype, t.shape, dynamic) for t in manifest.inputs],
            "outputs": [_tensor(t.name, t.dtype, t.shape, dynamic) for t in manifest.outputs],
        }
    names = _argument_names(getattr(handler, "model", None))
    platform = "pytorch_torchscript" if names is not None else "pytorch"
    if observed is None:
        return {"platform": platform, "signature": UNKNOWN, "inputs": [], "outputs": []}
    (dtype_in, shape_in), (dtype_out, shape_out) = observed["input"], observed["output"]
    name = names[0] if names is not None and len(names) == 1 else "input0"
    return {
        "platform": platform,
        "signature": OBSERVED,
        "inputs": [_tensor(name, dtype_in, shape_in, True)],
        "outputs": [_tensor("output0", dtype_out, shape_out, True)],
    }


def _npy_array(body: bytes) -> tuple[str, tuple[int, ...]]:
    import numpy as np

    stream = io.BytesIO(body)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    return ("bytes" if dtype.kind in "SU" else dtype.name), tuple(int(d) for d in shape)


def observe(
    request_type: str | None, request_body: bytes, answer_type: str | None, answer_body: bytes
) -> dict[str, Any] | None:
    """The dtype and shape of a successful invocation's NPY request and NPY answer (None unless both are NPY)."""
    if base_type(request_type) != NPY or base_type(answer_type) != NPY:
        return None
    try:
        observed_in, observed_out = _npy_array(request_body), _npy_array(answer_body)
    except (ValueError, TypeError):
        return None
    if not observed_in[1] or not observed_out[1]:
        return None  # a 0-d array has no batch dimension to describe
    return {"input": observed_in, "output": observed_out}
