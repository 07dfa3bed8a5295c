"""Typed compiler errors; each carries the Neo-style FailureReason the job records.

Hierarchy::

    CompilerError                      failure_reason "ClientError: ..." (job ends FAILED)
    ├── CompilerOptionsError           api_code=ValidationException: refuse at CreateCompilationJob
    ├── TargetError                    api_code=ValidationException: TargetDevice not supported
    ├── InputConfigurationError        Neo "InputConfiguration": tarball, model file, DataInputConfig
    │   ├── ModelLoadError             not a TorchScript archive (e.g. a torch.save pickle)
    │   └── ShapeMismatchError         DataInputConfig does not fit the model
    ├── CompilationError               Neo "CompilationError"
    │   ├── OperatorNotImplementedError  fallback disabled and unsupported operators present
    │   └── NothingOnNeuronError       torch-neuron's "No operations were successfully partitioned ..."
    └── CompileAbortedError            the sandbox stopped the compile
        ├── CompileTimeoutError        MaxRuntimeInSeconds exceeded
        ├── CompileResourceError       memory/CPU limit hit in the child
        └── CompileStoppedError        StopCompilationJob

`api_code` is set only where the API layer should refuse the request synchronously; every other
error ends the job FAILED with `failure_reason`. Messages are templates filled from keyword
arguments, and every error pickles and round-trips through `to_dict`/`error_from_dict` (the
sandbox child reports errors as JSON).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "CompilationError",
    "CompileAbortedError",
    "CompileResourceError",
    "CompileStoppedError",
    "CompileTimeoutError",
    "CompilerError",
    "CompilerOptionsError",
    "InputConfigurationError",
    "ModelLoadError",
    "NothingOnNeuronError",
    "OperatorNotImplementedError",
    "ShapeMismatchError",
    "TargetError",
    "error_from_dict",
]


class CompilerError(Exception):
    """Base of every error the compiler raises on purpose."""

    api_code: ClassVar[str | None] = None
    neo_category: ClassVar[str] = "ClientError"
    fmt: ClassVar[str] = "{message}"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.message = message if message is not None else self.fmt.format(**kwargs)
        super().__init__(self.message)

    @property
    def failure_reason(self) -> str:
        """Return the DescribeCompilationJob FailureReason for this error."""
        return f"{self.neo_category}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self).__name__, self.message, self.kwargs))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe form (the sandbox child sends errors this way)."""
        return {"type": type(self).__name__, "message": self.message, "kwargs": _json_safe(self.kwargs)}


def _json_safe(kwargs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        out[key] = value if isinstance(value, str | int | float | bool | type(None) | list | dict) else str(value)
    return out


def _rebuild(name: str, message: str, kwargs: dict[str, Any]) -> CompilerError:
    err = _REGISTRY.get(name, CompilerError)(message)
    err.kwargs = kwargs
    return err


def error_from_dict(data: dict[str, Any]) -> CompilerError:
    """Rebuild an error sent by `CompilerError.to_dict`."""
    return _rebuild(
        str(data.get("type", "CompilerError")), str(data.get("message", "")), dict(data.get("kwargs") or {})
    )


class CompilerOptionsError(CompilerError):
    api_code = "ValidationException"
    fmt = "CompilerOptions: {reason}"


class TargetError(CompilerError):
    api_code = "ValidationException"
    fmt = "TargetDevice {target!r} is not supported; supported target devices: {supported}."


class InputConfigurationError(CompilerError):
    fmt = "InputConfiguration: {reason}"


class ModelLoadError(InputConfigurationError):
    fmt = "InputConfiguration: Unable to load the PyTorch model {file!r}: {reason}"


class ShapeMismatchError(InputConfigurationError):
    fmt = "InputConfiguration: DataInputConfig {config} does not match the model: {reason}"


class CompilationError(CompilerError):
    fmt = "CompilationError: {reason}"


class OperatorNotImplementedError(CompilationError):
    # Neo's wording: "OperatorNotImplemented: The following operators are not implemented: {...}".
    fmt = "CompilationError: OperatorNotImplemented: The following operators are not implemented: {operators}"


class NothingOnNeuronError(CompilationError):
    # torch-neuron >= 1.1.7.0 raises this RuntimeError and Neo wraps it (amazon-sagemaker-examples#2312);
    # ``why`` adds which partitioning rule left nothing for Neuron and what to change.
    fmt = (
        "CompilationError: Unable to compile model for ml_inf1: No operations were successfully "
        "partitioned and compiled to neuron for this model - aborting trace! {why}"
    )


class CompileAbortedError(CompilerError):
    fmt = "{reason}"


class CompileTimeoutError(CompileAbortedError):
    fmt = "CompilationError: Compilation exceeded MaxRuntimeInSeconds ({seconds} s) and was stopped (TimeOut)."


class CompileResourceError(CompileAbortedError):
    fmt = "CompilationError: The compiler exceeded its {resource} limit ({limit}) and was stopped."


class CompileStoppedError(CompileAbortedError):
    neo_category = "Stopped"
    fmt = "Compilation job stopped by StopCompilationJob."


_REGISTRY: dict[str, type[CompilerError]] = {
    cls.__name__: cls
    for cls in (
        CompilerError,
        CompilerOptionsError,
        TargetError,
        InputConfigurationError,
        ModelLoadError,
        ShapeMismatchError,
        CompilationError,
        OperatorNotImplementedError,
        NothingOnNeuronError,
        CompileAbortedError,
        CompileTimeoutError,
        CompileResourceError,
        CompileStoppedError,
    )
}
