"""CreateCompilationJob's DataInputConfig and CompilerOptions, checked before the job is accepted.

The platform never imports the workers (or torch), so these mirror the grammar of the worker compiler's
``parse_data_input_config`` and ``parse_compiler_options`` (``neurondock_workers.compiler``) and give the
same reasons word for word; ``tests/integration/compilation/test_compilation_inputs.py`` runs both over
one corpus so they cannot drift apart. The worker parses the same strings again when it compiles.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_DIMS = 8
MAX_ELEMENTS = 2**31
DTYPES = frozenset({"float32", "float16", "bfloat16", "int64", "int32", "bool"})

FAST_MATH_VALUES = (
    "all",
    "none",
    "fast-relayout",
    "no-fast-relayout",
    "fp32-cast-all",
    "fp32-cast-all-fp16",
    "fp32-cast-matmult",
    "fp32-cast-matmult-bf16",
    "fp32-cast-matmult-fp16",
)
FP32_CAST_VALUES = ("all", "matmult", "matmult-fp16", "matmult-bf16", "all-fp16")
NO_EFFECT_FLAGS = (
    "enable-saturate-infinity",
    "enable-fast-loading-neuron-binaries",
    "enable-fast-context-switch",
)
EXECUTION_POLICIES = ("auto", "device-numerics", "fastest")
MAX_PIPELINE_CORES = 64


class NeoInputError(ValueError):
    """DataInputConfig or CompilerOptions cannot be compiled; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class InputShape:
    """One declared model input (dtype None: the compiler infers it from the model)."""

    name: str
    shape: tuple[int, ...]
    dtype: str | None = None


# --- DataInputConfig ---------------------------------------------------------------------------------


def parse_data_input_config(raw: str) -> list[InputShape]:
    """Parse Neo's PyTorch DataInputConfig: ``{"input0": [1,3,224,224]}`` or ``[[1,3,224,224]]``."""
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise NeoInputError(f"DataInputConfig is not valid JSON ({exc.msg}).") from None
    items: list[tuple[str, Any]]
    if isinstance(data, Mapping):
        items = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, list) and data and all(isinstance(d, int) and not isinstance(d, bool) for d in data):
        items = [("input0", list(data))]
    elif isinstance(data, list):
        items = [(f"input{i}", v) for i, v in enumerate(data)]
    else:
        items = []
    if not items:
        raise NeoInputError(
            'DataInputConfig must name at least one input shape, e.g. {"input0": [1,3,224,224]} or [[1,3,224,224]].'
        )
    return [_parse_shape(name, value) for name, value in items]


def _parse_shape(name: str, value: Any) -> InputShape:
    dtype: str | None = None
    if isinstance(value, Mapping):
        dtype = value.get("dtype")
        value = value.get("shape")
        if dtype is not None and dtype not in DTYPES:
            raise NeoInputError(f"input {name!r}: dtype {dtype!r} is not one of {sorted(DTYPES)}.")
    if not isinstance(value, list) or not value:
        raise NeoInputError(f"input {name!r}: the shape must be a non-empty list of integers.")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value):
        raise NeoInputError(f"input {name!r}: every dimension must be a positive integer, got {value}.")
    if len(value) > MAX_DIMS:
        raise NeoInputError(f"input {name!r}: at most {MAX_DIMS} dimensions are supported.")
    numel = 1
    for d in value:
        numel *= d
    if numel > MAX_ELEMENTS:
        raise NeoInputError(f"input {name!r}: {numel} elements is more than a NeuronCore input allows.")
    return InputShape(name, tuple(value), dtype)


def derived_data_input_config(shapes: list[InputShape]) -> str:
    """Return the DataInputConfig in its dict form (DescribeCompilationJob's DerivedDataInputConfig)."""
    return json.dumps(
        {s.name: list(s.shape) if s.dtype is None else {"shape": list(s.shape), "dtype": s.dtype} for s in shapes}
    )


# --- CompilerOptions ---------------------------------------------------------------------------------


def check_compiler_options(raw: str) -> list[str]:
    """Validate OutputConfig.CompilerOptions (a JSON string, list or object of neuron-cc flags).

    Returns the flag tokens; raises NeoInputError naming the first problem.
    """
    text = raw.strip()
    if not text:
        return []
    try:
        decoded: Any = json.loads(text)
    except json.JSONDecodeError:
        decoded = text  # a bare flag string ("--fast-math none") is accepted as well
    return _tokens_of(decoded)


def _tokens_of(decoded: Any) -> list[str]:
    if isinstance(decoded, str):
        tokens = _split(decoded.strip()) if decoded.strip() else []
    elif isinstance(decoded, Mapping):
        tokens = _tokens_from_mapping(decoded)
    elif isinstance(decoded, list):
        tokens = [str(t) for t in decoded]
        if len(tokens) == 1 and " " in tokens[0]:
            tokens = _split(tokens[0])
    else:
        raise NeoInputError(f"expected a JSON string, list or object, got {_json_type(decoded)}.")
    _check_tokens(tokens)
    return tokens


def _json_type(value: Any) -> str:
    return type(value).__name__


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise NeoInputError(f"could not split the flag string ({exc}).") from None


def _tokens_from_mapping(raw: Mapping[str, Any]) -> list[str]:
    tokens: list[str] = []
    for key, value in raw.items():
        flag = "--" + str(key).lstrip("-").replace("_", "-")
        if str(key).startswith("-O") or str(key) == "O":
            flag = "-O" + str(key)[2:] if str(key).startswith("-O") else "-O"
        if value is True or value is None:
            tokens.append(flag)
        elif value is False:
            tokens += [flag, "false"]
        elif isinstance(value, list | tuple):
            tokens += [flag, *[str(v) for v in value]]
        else:
            tokens += [flag, *_split(str(value))]
    return tokens


def _check_bool(flag: str, value: str) -> None:
    if value.lower() not in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        raise NeoInputError(f"{flag} takes true or false, got {value!r}.")


def _check_int(flag: str, value: str | None, low: int, high: int) -> None:
    try:
        number = int(value) if value is not None else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise NeoInputError(f"{flag} takes an integer from {low} to {high}, got {value!r}.")


def _check_ratio(flag: str, args: list[str]) -> None:
    try:
        value = float(args[0]) if args else -1.0
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise NeoInputError(f"{flag} takes a number in (0, 1], got {args}.")


def _unknown_flag(flag: str) -> NeoInputError:
    return NeoInputError(
        f"unknown flag {flag!r}. Supported: --fast-math, --fp32-cast, --neuroncore-pipeline-cores "
        "(alias --num-neuroncores), --dynamic-batch-size, -O1/-O2/-O3, --minimum-segment-size, "
        "--single-fusion-ratio-threshold, --fallback/--no-fallback, --verbose, --execution-policy, "
        + ", ".join(f"--{f}" for f in NO_EFFECT_FLAGS)
        + "."
    )


def _check_tokens(tokens: list[str]) -> None:
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("-"):
            raise NeoInputError(f"unexpected value {token!r} (every setting starts with a flag).")
        flag, _, inline = token.partition("=")
        args = [inline] if inline else _values_after(tokens, i)
        consumed = 0 if inline else len(args)
        name = flag.lstrip("-").replace("_", "-")
        if flag.startswith("-O") and not flag.startswith("--"):
            _check_int("-O", flag[2:] or (args[0] if args else None), 1, 3)
            consumed = 0 if flag[2:] or inline else 1
        elif name == "fast-math":
            if not args:
                raise NeoInputError(f"--fast-math needs a value: one or more of {', '.join(FAST_MATH_VALUES)}.")
            for value in args:
                if value not in FAST_MATH_VALUES:
                    raise NeoInputError(f"--fast-math value {value!r} is not one of {', '.join(FAST_MATH_VALUES)}.")
        elif name == "fp32-cast":
            if len(args) != 1 or args[0] not in FP32_CAST_VALUES:
                raise NeoInputError(f"--fp32-cast takes one of {', '.join(FP32_CAST_VALUES)}, got {args}.")
        elif name in ("neuroncore-pipeline-cores", "num-neuroncores"):
            _check_int(flag, args[0] if args else None, 1, MAX_PIPELINE_CORES)
            consumed = 0 if inline else 1
        elif name in ("dynamic-batch-size", "fallback"):
            if args:
                _check_bool(flag, args[0])
            consumed = min(consumed, 1)
        elif name == "no-fallback":
            pass
        elif name == "minimum-segment-size":
            _check_int(flag, args[0] if args else None, 1, 1_000_000)
            consumed = 0 if inline else 1
        elif name == "single-fusion-ratio-threshold":
            _check_ratio(flag, args)
            consumed = 0 if inline else 1
        elif name == "verbose":
            consumed = min(consumed, 1)
        elif name == "execution-policy":
            if len(args) != 1 or args[0] not in EXECUTION_POLICIES:
                raise NeoInputError(f"--execution-policy takes one of {', '.join(EXECUTION_POLICIES)}, got {args}.")
            consumed = 0 if inline else 1
        elif name in NO_EFFECT_FLAGS:
            consumed = 0
        else:
            raise _unknown_flag(flag)
        if consumed < len(args) and name != "fast-math" and not inline:
            raise NeoInputError(f"{flag} got unexpected extra value(s) {args[consumed:]}.")
        i += 1 + consumed


def _values_after(tokens: list[str], index: int) -> list[str]:
    out = []
    j = index + 1
    while j < len(tokens) and not tokens[j].startswith("-"):
        out.append(tokens[j])
        j += 1
    return out
