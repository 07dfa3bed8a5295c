"""The SageMaker PyTorch inference contract: hooks from ``code/<SAGEMAKER_PROGRAM>`` or the defaults.

Mirrors ``sagemaker_inference.transformer`` and the PyTorch toolkit's default handler
(sagemaker-api.md §5) so a ``model.tar.gz`` written for SageMaker runs here unchanged. Where the
toolkit is unsafe or lossy we deviate on purpose: NPY bodies are loaded without pickle, NPY output
keeps the prediction's dtype, and format errors carry a 4xx status instead of a bare 500.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
ANY = "*/*"
OCTET_STREAM = "application/octet-stream"
# The toolkit decodes these to ``str`` before input_fn sees them.
UTF8_TYPES = frozenset({JSON, CSV})
SUPPORTED_TYPES = (JSON, CSV, NPY)

DEFAULT_PROGRAM = "inference.py"
DEFAULT_MODEL_FILENAME = "model.pt"
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"

Hook = Callable[..., Any]
_HOOK_NAMES = (
    "model_fn",
    "input_fn",
    "predict_fn",
    "output_fn",
    "transform_fn",
    "pre_model_fn",
    "model_warmup_fn",
)


class InferenceError(Exception):
    """An error that carries its own HTTP status, like the toolkit's GenericInferenceToolkitError."""

    status: int = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class UnsupportedContentTypeError(InferenceError):
    status = 415


class UnsupportedAcceptError(InferenceError):
    status = 406


class InputDecodeError(InferenceError):
    status = 400


class ModelLoadError(Exception):
    """A model file exists but is not loadable TorchScript."""


class InputShapeError(InferenceError):
    """A tensor that does not fit a compiled model's static input shapes (the Neuron runtime refuses it)."""

    status = 400


def base_type(content_type: str | None) -> str:
    """Return a media type without parameters, lower-cased (``text/csv; charset=utf-8`` → ``text/csv``)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_accept(accept: str, default_accept: str = JSON) -> list[str]:
    """Split an Accept value into media types in order, with ``*/*`` meaning the default accept."""
    types: list[str] = []
    for part in accept.split(","):
        media = base_type(part)
        if not media:
            continue
        types.append(base_type(default_accept) if media == ANY else media)
    return types or [base_type(default_accept)]


@dataclass
class Context:
    """What a hook's optional trailing ``context`` argument sees (the model server context's common part)."""

    model_dir: str
    model_name: str = "model"
    request_headers: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)

    @property
    def system_properties(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir, "gpu_id": None, "batch_size": 1}

    @property
    def custom_attributes(self) -> str | None:
        return self.get_request_header(0, CUSTOM_ATTRIBUTES_HEADER)

    def get_request_header(self, idx: int, key: str) -> str | None:
        """Return a request header by case-insensitive name (``idx`` is the batch index, always 0)."""
        wanted = key.lower()
        return next((v for k, v in self.request_headers.items() if k.lower() == wanted), None)

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return dict(self.request_headers)

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.response_headers[key] = value

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.response_headers["Content-Type"] = value


@dataclass(frozen=True)
class InvocationResult:
    """One answer: a 200 with the encoded body, or an error status with message and traceback."""

    status: int
    body: bytes
    content_type: str
    message: str = ""
    custom_attributes: str | None = None
    model_latency_us: int = 0


def _arity(fn: Hook) -> int:
    return len(inspect.signature(fn).parameters)


def _call(fn: Hook, args: tuple[Any, ...], context: Context, arity: int | None = None) -> Any:
    # The toolkit picks by arity: a hook with one parameter more than the contract gets the context.
    count = _arity(fn) if arity is None else arity
    if count == len(args):
        return fn(*args)
    if count == len(args) + 1:
        return fn(*args, context)
    name = getattr(fn, "__name__", repr(fn))
    raise TypeError(f"{name} takes {count} arguments but {len(args)} were given.")


# --- the PyTorch toolkit's defaults ---------------------------------------------------------------


COMPILED_MANIFEST = "manifest.json"
COMPILED_TARGET = "ml_inf1"


class CompiledModel(torch.nn.Module):
    """A model compiled for ``ml_inf1``, run the way the Neuron runtime runs it: static input shapes.

    torch-neuron fixes every input's shape and dtype at compile time; only dim 0 may vary, and only
    when compiled with ``--dynamic-batch-size``. Anything else fails before it reaches a NeuronCore
    (``NRT_EXEC_BAD_INPUT``), so here it is a 400 that names the compiled shape.
    """

    def __init__(
        self,
        module: Any,
        inputs: list[dict[str, Any]],
        dynamic_batch: bool,
        device_seconds: float | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.inputs = inputs
        self.dynamic_batch = dynamic_batch
        # The compile report's projected NeuronCore time per compiled batch (None: no projection).
        self.device_seconds = device_seconds
        self.compiled_batch = max(1, int(inputs[0]["shape"][0])) if inputs and inputs[0]["shape"] else 1
        self.device_ns = 0
        self.last_device_us: int | None = None

    def expected(self) -> str:
        """Describe the compiled inputs, e.g. ``input0 [1, 3, 224, 224] float32``."""
        batch = " (any size in dim 0)" if self.dynamic_batch else ""
        return ", ".join(f"{i['name']} {list(i['shape'])} {i['dtype']}" for i in self.inputs) + batch

    def check(self, args: tuple[Any, ...]) -> None:
        """Raise InputShapeError unless ``args`` match the compiled inputs."""
        hint = "" if self.dynamic_batch else " Compile with --dynamic-batch-size to accept any batch size in dim 0."
        if len(args) != len(self.inputs):
            raise InputShapeError(
                f"The model was compiled for Inferentia with {len(self.inputs)} input(s) "
                f"({self.expected()}) but received {len(args)}."
            )
        for arg, spec in zip(args, self.inputs, strict=True):
            shape, dtype, name = list(spec["shape"]), spec["dtype"], spec["name"]
            if not isinstance(arg, torch.Tensor):
                raise InputShapeError(
                    f"Input {name} must be a tensor of shape {shape} {dtype}, got {type(arg).__name__}."
                )
            got = list(arg.shape)
            fits = len(got) == len(shape) and all(
                g == s or (i == 0 and self.dynamic_batch) for i, (g, s) in enumerate(zip(got, shape, strict=True))
            )
            if not fits:
                raise InputShapeError(
                    f"Input {name} has shape {got} but the model was compiled for Inferentia with the static "
                    f"shape {shape}{' (dim 0 dynamic)' if self.dynamic_batch else ''}; the Neuron runtime refuses "
                    f"other shapes (NRT_EXEC_BAD_INPUT, emulated).{hint}"
                )
            got_dtype = str(arg.dtype).removeprefix("torch.")
            if got_dtype != dtype:
                raise InputShapeError(
                    f"Input {name} has dtype {got_dtype} but the model was compiled for {dtype} "
                    "(NRT_EXEC_BAD_INPUT, emulated). Send application/x-npy data of that dtype, or convert it "
                    "in input_fn."
                )

    def forward(self, *args: Any) -> Any:
        self.last_device_us = None
        self.check(args)
        out = self.module(*args)
        if self.device_seconds is not None:
            # The runtime runs dim 0 in compiled-batch chunks, padding the last (inferentia.md §7.3).
            rows = int(args[0].shape[0]) if args and args[0].dim() else 1
            chunks = -(-rows // self.compiled_batch)
            device_ns = int(chunks * self.device_seconds * 1e9)
            self.device_ns += device_ns
            self.last_device_us = device_ns // 1000
        return out


def projected_device_seconds(manifest: dict[str, Any], instance_type: str = "ml.inf1.xlarge") -> float | None:
    """Return the projected NeuronCore time of one compiled-batch execution, from the compile report.

    The report projects latency per ml.inf1 size (its CPU-fallback partitions measured on the host
    included); the device's share is that latency minus those measured CPU partitions.
    """
    projection = manifest.get("projection") or {}
    entries = [e for e in projection.get("inf1") or [] if isinstance(e, dict) and e.get("fits")]
    entry = next((e for e in entries if e.get("instance_type") == instance_type), entries[0] if entries else None)
    if entry is None or not isinstance(entry.get("latency_ms"), int | float):
        return None
    cpu_ms = sum(
        float(t["p50_ms"])
        for t in projection.get("cpu_segments_measured") or []
        if isinstance(t, dict) and isinstance(t.get("p50_ms"), int | float)
    )
    return max(0.0, (float(entry["latency_ms"]) - cpu_ms) / 1e3)


def load_compiled_model(model_dir: str | Path) -> Any:
    """Load a neurondock-compiled artifact (it holds the compiler's manifest.json) the way its runtime does."""
    from neurondock_workers.compiler import load_compiled

    root = Path(model_dir)
    manifest = json.loads((root / COMPILED_MANIFEST).read_text())
    module = load_compiled(root)
    if manifest.get("target") != COMPILED_TARGET:
        return module  # ml_c5: optimised TorchScript for the CPU, no device shapes to enforce
    resources = manifest.get("resources") or {}
    static = (resources.get("static_shapes") or {}).get("inputs") or []
    names = [i.get("name") for i in (manifest.get("example_inputs") or {}).get("inputs") or []]
    inputs = [
        {"name": names[i] if i < len(names) and names[i] else f"input{i}", "shape": s["shape"], "dtype": s["dtype"]}
        for i, s in enumerate(static)
    ]
    dynamic = 0 in (resources.get("dynamic_dims") or [])
    return CompiledModel(module, inputs, dynamic, projected_device_seconds(manifest)).eval()


def is_compiled_artifact(model_dir: str | Path) -> bool:
    """Return whether ``model_dir`` is an unpacked neurondock compiled artifact."""
    path = Path(model_dir) / COMPILED_MANIFEST
    if not path.is_file():
        return False
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("emulated") is True and "compiler" in manifest


def default_model_fn(model_dir: str) -> Any:
    """Load ``model.pt``, else the single ``*.pt``/``*.pth`` at the top of ``model_dir``, as TorchScript.

    A neurondock-compiled artifact (``manifest.json`` beside ``model.pt``) loads through the compiler's
    ``load_compiled``; one compiled for ``ml_inf1`` then refuses inputs that do not fit its static shapes.
    """
    root = Path(model_dir)
    if is_compiled_artifact(root):
        try:
            return load_compiled_model(root)
        except RuntimeError as exc:
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
        raise ModelLoadError(
            f"Failed to load {path}. Please ensure model is saved using torchscript."
        ) from exc
    model.eval()
    return model


def _decode_npy(data: bytes | str) -> np.ndarray:
    raw = data.encode("latin-1") if isinstance(data, str) else data
    try:
        # allow_pickle=False: a pickled object array in a request body would run arbitrary code.
        return np.load(io.BytesIO(raw), allow_pickle=False)
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
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return buffer.getvalue()
    if array.ndim > 2:
        raise UnsupportedAcceptError(
            f"A {array.ndim}-D prediction cannot be written as {CSV}; ask for {JSON} or {NPY}, "
            "or implement output_fn."
        )
    stream = io.StringIO()
    np.savetxt(stream, array.reshape(1) if array.ndim == 0 else array, delimiter=",", fmt="%s")
    return stream.getvalue().encode()


def default_output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    """Encode a prediction as the first supported type in ``accept`` (JSON, CSV or NPY)."""
    for media in parse_accept(accept):
        if media in SUPPORTED_TYPES:
            return _encode(prediction, media), media
    raise UnsupportedAcceptError(
        f"Accept type {accept} is not supported by the default output_fn, which encodes "
        f"{', '.join(SUPPORTED_TYPES)}. Ask for one of those, or implement output_fn in code/inference.py "
        "to serialize the response."
    )


# --- the transformer ------------------------------------------------------------------------------


def _module_name(program: str) -> str:
    return program[:-3] if program.endswith(".py") else program


def _to_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise TypeError(
        f"output_fn/transform_fn must return bytes or str, or a (body, content_type) tuple; "
        f"got {type(body).__name__}"
    )


class Handler:
    """The user's hooks (or the defaults) bound to one model directory."""

    def __init__(self, model_dir: Path | str, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.model_dir = Path(model_dir)
        self.code_dir = self.model_dir / "code"
        self.program = env.get("SAGEMAKER_PROGRAM") or DEFAULT_PROGRAM
        self.default_accept = env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or JSON
        self.model: Any = None
        # Which startup hook is running, so a failure can name it ("model_fn raised: ...").
        self.load_stage = "model_fn"
        self.module = self._import_user_module(explicit="SAGEMAKER_PROGRAM" in env)

        hooks: dict[str, Hook | None] = {
            name: getattr(self.module, name, None) if self.module is not None else None
            for name in _HOOK_NAMES
        }
        if hooks["transform_fn"] and (hooks["input_fn"] or hooks["predict_fn"] or hooks["output_fn"]):
            raise ValueError(
                "Cannot use transform_fn implementation in conjunction with input_fn, predict_fn, "
                "and/or output_fn implementation"
            )
        self.model_fn: Hook = hooks["model_fn"] or default_model_fn
        self.input_fn: Hook = hooks["input_fn"] or default_input_fn
        self.predict_fn: Hook = hooks["predict_fn"] or default_predict_fn
        self.output_fn: Hook = hooks["output_fn"] or default_output_fn
        self.transform_fn: Hook = hooks["transform_fn"] or self._default_transform_fn
        self.pre_model_fn = hooks["pre_model_fn"]
        self.model_warmup_fn = hooks["model_warmup_fn"]
        # inspect.signature costs ~10 µs; the hooks never change, so count their parameters once.
        self._arity = {
            name: _arity(fn)
            for name in ("input_fn", "predict_fn", "output_fn", "transform_fn")
            if (fn := getattr(self, name)) is not None
        }

    def _import_user_module(self, explicit: bool) -> ModuleType | None:
        name = _module_name(self.program)
        path = self.code_dir / f"{name}.py"
        if not path.is_file():
            if explicit:
                # The toolkit silently falls back to the defaults here; say so where the user will look.
                print(
                    f"neurondock: SAGEMAKER_PROGRAM={self.program} but the model archive has no "
                    f"code/{name}.py; using the default PyTorch handler",
                    file=sys.stderr,
                    flush=True,
                )
            return None
        # The code dir and its lib/ go on sys.path so the program can import its own helpers.
        for extra in (self.code_dir / "lib", self.code_dir):
            if extra.is_dir() and str(extra) not in sys.path:
                sys.path.insert(0, str(extra))
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"Cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    def _context(self, headers: Mapping[str, str] | None = None) -> Context:
        return Context(model_dir=str(self.model_dir), request_headers=dict(headers or {}))

    def load_model(self) -> Any:
        """Run pre_model_fn, model_fn and model_warmup_fn once, as the toolkit does at startup."""
        context = self._context()
        model_dir = str(self.model_dir)
        if self.pre_model_fn is not None:
            self.load_stage = "pre_model_fn"
            _call(self.pre_model_fn, (model_dir,), context)
        self.load_stage = "model_fn"
        self.model = _call(self.model_fn, (model_dir,), context)
        if self.model_warmup_fn is not None:
            self.load_stage = "model_warmup_fn"
            _call(self.model_warmup_fn, (model_dir, self.model), context)
        return self.model

    def _default_transform_fn(
        self, model: Any, input_data: Any, content_type: str, accept: str, context: Context
    ) -> Any:
        arity = self._arity
        data = _call(self.input_fn, (input_data, content_type), context, arity["input_fn"])
        prediction = _call(self.predict_fn, (data, model), context, arity["predict_fn"])
        return _call(self.output_fn, (prediction, accept), context, arity["output_fn"])

    def invoke(
        self,
        body: bytes,
        content_type: str | None = None,
        accept: str | None = None,
        custom_attributes: str | None = None,
    ) -> InvocationResult:
        """Run one request through the hooks; never raises, errors become a status and a message."""
        started = time.perf_counter_ns()
        content_type = content_type or OCTET_STREAM
        if not accept or accept.strip() == ANY:
            accept = self.default_accept
        headers = {"Content-Type": content_type, "Accept": accept}
        if custom_attributes is not None:
            headers[CUSTOM_ATTRIBUTES_HEADER] = custom_attributes
        context = self._context(headers)
        try:
            data: bytes | str = body
            if base_type(content_type) in UTF8_TYPES:
                try:
                    data = body.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputDecodeError(
                        f"The request body is not valid UTF-8 {content_type}: {exc}"
                    ) from exc
            result = _call(
                self.transform_fn,
                (self.model, data, content_type, accept),
                context,
                self._arity["transform_fn"],
            )
            response_type = context.response_headers.get("Content-Type") or accept
            if isinstance(result, tuple):
                result, response_type = result[0], result[1] or response_type
            payload = _to_bytes(result)
        except Exception as exc:
            trace = traceback.format_exc()
            if isinstance(exc, InferenceError):
                status, message = exc.status, exc.message
            else:
                status, message = 500, f"{type(exc).__name__}: {exc}"
            text = f"{message}\n{trace}"
            return InvocationResult(
                status=status,
                body=text.encode("utf-8", "replace"),
                content_type="text/plain; charset=utf-8",
                message=text,
                custom_attributes=context.response_headers.get(CUSTOM_ATTRIBUTES_HEADER),
                model_latency_us=(time.perf_counter_ns() - started) // 1000,
            )
        return InvocationResult(
            status=200,
            body=payload,
            content_type=str(response_type),
            custom_attributes=context.response_headers.get(CUSTOM_ATTRIBUTES_HEADER),
            model_latency_us=(time.perf_counter_ns() - started) // 1000,
        )


def load_handler(model_dir: Path | str, environ: Mapping[str, str] | None = None) -> Handler:
    """Import the user's program and load the model; what a replica does before it listens."""
    handler = Handler(model_dir, environ)
    handler.load_model()
    return handler
