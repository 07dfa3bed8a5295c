"""The PyTorch inference toolkit's default hooks, used wherever ``code/inference.py`` defines none.

They behave like SageMaker's defaults (``docs/runtime.md``, "The inference contract") except where
the toolkit is unsafe or lossy: NPY bodies are loaded without pickle, NPY output keeps the
prediction's dtype, and format errors carry a 4xx status instead of a bare 500.
"""

from __future__ import annotations

import functools
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurondock_platform import compiled_manifest
from neurondock_platform.compiled_manifest import ManifestError
from neurondock_workers.hosting import npy
from neurondock_workers.hosting.compiled import load_compiled_model
from neurondock_workers.hosting.contract import (
    CSV,
    JSON,
    NPY,
    SUPPORTED_TYPES,
    UTF8_TYPES,
    InputDecodeError,
    ModelLoadError,
    UnsupportedAcceptError,
    UnsupportedContentTypeError,
    base_type,
    parse_accept,
)

DEFAULT_MODEL_FILENAME = "model.pt"


def default_model_fn(model_dir: str) -> Any:
    """Load ``model.pt``, else the single ``*.pt``/``*.pth`` at the top of ``model_dir``, as TorchScript.

    A neurondock-compiled artifact (its ``manifest.json`` beside ``model.pt``) loads the way its runtime
    loads it; one compiled for ``ml_inf1`` then refuses inputs that do not fit its static shapes.
    """
    root = Path(model_dir)
    try:
        manifest = compiled_manifest.load(root)
        if manifest is not None:
            return load_compiled_model(root, manifest)
    except (ManifestError, RuntimeError) as exc:
        raise ModelLoadError(f"Failed to load the compiled model in {root}: {exc}") from exc
    path = root / DEFAULT_MODEL_FILENAME
    if not path.exists():
        files = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix in (".pt", ".pth"))
        if len(files) != 1:
            raise ValueError(f"Exactly one .pth or .pt file is required for PyTorch models: {files}")
        path = root / files[0]
    try:
        with warnings.catch_warnings():
            # torch 2.x deprecates TorchScript, but it is the format SageMaker's contract (and Neo) use.
            warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", DeprecationWarning)
            model = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise ModelLoadError(f"Failed to load {path}. Please ensure model is saved using torchscript.") from exc
    model.eval()
    return model


def _decode_npy(data: bytes | str) -> np.ndarray:
    raw = data.encode("latin-1") if isinstance(data, str) else data
    try:
        # Never pickle: a pickled object array in a request body would run arbitrary code.
        return npy.load(raw)
    except ValueError as exc:
        raise InputDecodeError(f"Could not decode the request body as {NPY}: {exc}") from exc


def default_input_fn(input_data: bytes | str, content_type: str) -> torch.Tensor:
    """Decode a JSON, CSV or NPY body into a tensor (JSON and CSV as float32, NPY keeps its dtype)."""
    media = base_type(content_type)
    if media == NPY:
        return torch.from_numpy(_decode_npy(input_data))
    if media not in UTF8_TYPES:
        raise UnsupportedContentTypeError(
            f"Content type {content_type or '(none)'} is not supported by the default input_fn, which "
            f"decodes {', '.join(SUPPORTED_TYPES)}. Send one of those ContentTypes, or implement input_fn "
            "in code/inference.py to deserialize the request data."
        )
    text = input_data.decode("utf-8") if isinstance(input_data, bytes) else input_data
    if not text.strip():
        raise InputDecodeError(f"The request body is empty; {media} needs at least one value.")
    try:
        if media == JSON:
            array = np.asarray(json.loads(text), dtype=np.float32)
        else:
            array = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise InputDecodeError(
            f"Could not decode the request body as {media} numbers: {exc}. The default input_fn expects "
            "a (nested) list of numbers for JSON and comma-separated numbers for CSV."
        ) from exc
    return torch.from_numpy(array)


def default_predict_fn(data: Any, model: Any) -> Any:
    """Run the model in eval mode without autograd."""
    if getattr(model, "training", False):
        model.eval()
    with torch.inference_mode():
        return model(data)


def _to_plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if value.is_cpu and not value.requires_grad:
            # What detach().cpu() would return shares this tensor's memory: skip their two dispatches.
            return value.numpy()
        return value.detach().cpu().numpy()
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encode(prediction: Any, media: str) -> bytes:
    plain = _to_plain(prediction)
    if media == JSON:
        return json.dumps(plain, default=_json_default).encode()
    array = np.asarray(plain)
    if media == NPY:
        return npy.save(array)
    if array.ndim > 2:
        raise UnsupportedAcceptError(
            f"A {array.ndim}-D prediction cannot be written as {CSV}; ask for {JSON} or {NPY}, or implement output_fn."
        )
    stream = io.StringIO()
    np.savetxt(stream, array.reshape(1) if array.ndim == 0 else array, delimiter=",", fmt="%s")
    return stream.getvalue().encode()


@functools.lru_cache(maxsize=64)
def _output_type(accept: str) -> str | None:
    # A replica sees a handful of Accept values; parsing one costs more than the NPY encode it picks.
    return next((media for media in parse_accept(accept) if media in SUPPORTED_TYPES), None)


def default_output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    """Encode a prediction as the first supported type in ``accept`` (JSON, CSV or NPY)."""
    media = _output_type(accept)
    if media is not None:
        return _encode(prediction, media), media
    raise UnsupportedAcceptError(
        f"Accept type {accept} is not supported by the default output_fn, which encodes "
        f"{', '.join(SUPPORTED_TYPES)}. Ask for one of those, or implement output_fn in code/inference.py "
        "to serialize the response."
    )
