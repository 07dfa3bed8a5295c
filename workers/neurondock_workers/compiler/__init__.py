"""Emulated AWS Inferentia (Inf1) compiler: torch-neuron's trace, partitioner and casts, run on the CPU.

Entry points: `compile_model` (in process) and `CompileProcess` (a killable child with time and
memory limits) both return a `CompileResult`; errors are `CompilerError` subclasses carrying the
Neo-style `failure_reason`. Everything the compiler reports about Inferentia is emulated or
projected and says so (`"emulated": true`).
"""

from __future__ import annotations

from ._artifact import load_compiled, read_manifest
from ._cache import CacheEntry, CompileCache
from ._compile import COMPILER_NAME, COMPILER_VERSION, SUPPORTED_TARGETS, CompileResult, compile_model
from ._grammar import CompilerOptions, InputShape, parse_compiler_options, parse_data_input_config
from ._sandbox import CompileProcess, CompileRequest, run_compile_sandboxed
from .errors import (
    CompilationError,
    CompileAbortedError,
    CompilerError,
    CompileResourceError,
    CompilerOptionsError,
    CompileStoppedError,
    CompileTimeoutError,
    InputConfigurationError,
    ModelLoadError,
    NothingOnNeuronError,
    OperatorNotImplementedError,
    ShapeMismatchError,
    TargetError,
    error_from_dict,
)

__all__ = [
    "COMPILER_NAME",
    "COMPILER_VERSION",
    "SUPPORTED_TARGETS",
    "CacheEntry",
    "CompilationError",
    "CompileAbortedError",
    "CompileCache",
    "CompileProcess",
    "CompileRequest",
    "CompileResourceError",
    "CompileResult",
    "CompileStoppedError",
    "CompileTimeoutError",
    "CompilerError",
    "CompilerOptions",
    "CompilerOptionsError",
    "InputConfigurationError",
    "InputShape",
    "ModelLoadError",
    "NothingOnNeuronError",
    "OperatorNotImplementedError",
    "ShapeMismatchError",
    "TargetError",
    "compile_model",
    "error_from_dict",
    "load_compiled",
    "parse_compiler_options",
    "parse_data_input_config",
    "read_manifest",
    "run_compile_sandboxed",
]
