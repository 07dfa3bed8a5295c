"""The shared vocabulary of the SageMaker inference contract: media types, the hook context, errors, answers.

The contract is SageMaker's PyTorch inference toolkit's (``docs/runtime.md``, "The inference
contract"): hooks named ``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn`` or ``transform_fn``,
each optionally taking a trailing ``context``. User code may raise ``InferenceError`` (or a subclass)
to answer with its own HTTP status.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from neurondock_workers.sandbox import memory_limit_note

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
ANY = "*/*"
OCTET_STREAM = "application/octet-stream"
# The toolkit decodes these to ``str`` before input_fn sees them.
UTF8_TYPES = frozenset({JSON, CSV})
SUPPORTED_TYPES = (JSON, CSV, NPY)
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"


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


class InputShapeError(InferenceError):
    """A tensor that does not fit a compiled model's static input shapes (the Neuron runtime refuses it)."""

    status = 400


class ModelLoadError(Exception):
    """A model file exists but is not loadable TorchScript."""


@functools.lru_cache(maxsize=256)
def base_type(content_type: str | None) -> str:
    """Return a media type without parameters, lower-cased (``text/csv; charset=utf-8`` → ``text/csv``)."""
    # Cached: a replica sees a handful of content types, and each request asks about its own twice.
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
class Failure:
    """Why one request failed: its HTTP status and the error's type, message and traceback, kept apart."""

    status: int
    error_type: str
    message: str
    traceback: str

    @staticmethod
    def of(exc: BaseException, trace: str) -> Failure:
        """Describe an exception a hook (or the runtime around it) raised."""
        if isinstance(exc, InferenceError):
            return Failure(exc.status, type(exc).__name__, exc.message, trace)
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Failure(500, type(exc).__name__, text + memory_limit_note(exc), trace)

    def text(self) -> str:
        """Return the message followed by the traceback: what the replica's log shows (the caller sees the message)."""
        return f"{self.message}\n{self.traceback}"


# Made for every answer: slotted, not frozen (a frozen __init__ costs a setattr call per field).
@dataclass(slots=True)
class InvocationResult:
    """One answer: a 200 with the encoded body, or an error status with its failure."""

    status: int
    body: bytes
    content_type: str
    message: str = ""
    custom_attributes: str | None = None
    model_latency_us: int = 0
    failure: Failure | None = None
    # Parts already streamed before this result (the body then holds nothing; a failure broke the stream).
    parts: int = 0
