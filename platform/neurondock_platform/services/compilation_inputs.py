"""The grammar of CreateCompilationJob's inputs: TargetDevice, DataInputConfig and CompilerOptions.

Written once, torch-free: the API checks a request with it before the job is accepted, and the
worker's compiler (``neurondock_workers.compiler``) builds its options and input shapes with the same
functions, so a request is refused for the same reason, word for word, wherever it is read. What each
flag means, and which torch-neuron/neuron-cc setting it stands for, is in ``docs/compiler.md``.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

SUPPORTED_TARGETS = ("ml_inf1", "ml_c5")
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
MAX_PIPELINE_CORES = 64  # NeuronCore Pipeline spans at most 16 chips of 4 cores (docs/inferentia.md)

# cast mode -> (scope, dtype): "all" rounds every FP32 constant and matmul input, "matmult" only GEMM/conv.
CAST_MODES = {
    "fp32-cast-all": ("all", "bfloat16"),
    "fp32-cast-all-fp16": ("all", "float16"),
    "fp32-cast-matmult": ("matmult", "bfloat16"),  # matmult-transposes in FP16 are not emulated
    "fp32-cast-matmult-bf16": ("matmult", "bfloat16"),
    "fp32-cast-matmult-fp16": ("matmult", "float16"),
}
_FP32_CAST_TO_MODE = {
    "all": "fp32-cast-all",
    "all-fp16": "fp32-cast-all-fp16",
    "matmult": "fp32-cast-matmult",
    "matmult-bf16": "fp32-cast-matmult-bf16",
    "matmult-fp16": "fp32-cast-matmult-fp16",
}


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

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe form."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class CompilerOptions:
    """Parsed, validated compiler options with torch-neuron's defaults."""

    cast_mode: str = "fp32-cast-all"
    fast_relayout: bool = True
    pipeline_cores: int = 1
    dynamic_batch_size: bool = False
    optimization_level: int = 2
    minimum_segment_size: int = 2
    single_fusion_ratio_threshold: float = 0.6
    fallback: bool = True
    verbose: str | None = None
    # neurondock extension choosing what the artifact serves: "auto" serves the emulated casts unless that is
    # slower than the uncompiled model (then FP32 within the drift envelope), "device-numerics" always serves
    # the casts, "fastest" serves the fastest execution within the envelope.
    execution_policy: str = "auto"
    notes: tuple[str, ...] = field(default=())

    @property
    def cast_scope(self) -> str:
        """Return "all" or "matmult"."""
        return CAST_MODES[self.cast_mode][0]

    @property
    def cast_dtype(self) -> str:
        """Return "bfloat16" or "float16"."""
        return CAST_MODES[self.cast_mode][1]

    def neuron_cc_args(self) -> list[str]:
        """Return the neuron-cc arguments these options stand for (for the log and the manifest)."""
        args = ["--fast-math", self.cast_mode, "fast-relayout" if self.fast_relayout else "no-fast-relayout"]
        if self.pipeline_cores > 1:
            args += ["--neuroncore-pipeline-cores", str(self.pipeline_cores)]
        args.append(f"-O{self.optimization_level}")
        return args

    def cache_key(self) -> str:
        """Return a canonical string for the compile cache (notes excluded)."""
        data = asdict(self)
        data.pop("notes")
        data.pop("verbose")
        return json.dumps(data, sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe form including the derived cast scope and dtype."""
        data = asdict(self)
        data["notes"] = list(self.notes)
        data["cast_scope"] = self.cast_scope
        data["cast_dtype"] = self.cast_dtype
        data["neuron_cc_args"] = self.neuron_cc_args()
        return data


# --- DataInputConfig ---------------------------------------------------------------------------------


def parse_data_input_config(raw: str | Mapping[str, Any] | Sequence[Any]) -> list[InputShape]:
    """Parse Neo's PyTorch DataInputConfig: ``{"input0": [1,3,224,224]}`` or ``[[1,3,224,224]]``.

    Each shape may also be ``{"shape": [...], "dtype": "int64"}`` (a neurondock extension for token ids).
    """
    data: Any = raw
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise NeoInputError(f"DataInputConfig is not valid JSON ({exc.msg}).") from None
    items: list[tuple[str, Any]]
    if isinstance(data, Mapping):
        items = [(str(k), v) for k, v in data.items()]
    elif _is_list(data) and data and all(_is_int(d) for d in data):
        items = [("input0", list(data))]  # a bare shape: one input
    elif _is_list(data):
        items = [(f"input{i}", v) for i, v in enumerate(data)]
    else:
        items = []
    if not items:
        raise NeoInputError(
            'DataInputConfig must name at least one input shape, e.g. {"input0": [1,3,224,224]} or [[1,3,224,224]].'
        )
    return [_parse_shape(name, value) for name, value in items]


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_shape(name: str, value: Any) -> InputShape:
    dtype: str | None = None
    if isinstance(value, Mapping):
        dtype = value.get("dtype")
        value = value.get("shape")
        if dtype is not None and dtype not in DTYPES:
            raise NeoInputError(f"input {name!r}: dtype {dtype!r} is not one of {sorted(DTYPES)}.")
    if not _is_list(value) or not value:
        raise NeoInputError(f"input {name!r}: the shape must be a non-empty list of integers.")
    if not all(_is_int(d) and d > 0 for d in value):
        raise NeoInputError(f"input {name!r}: every dimension must be a positive integer, got {list(value)}.")
    if len(value) > MAX_DIMS:
        raise NeoInputError(f"input {name!r}: at most {MAX_DIMS} dimensions are supported.")
    numel = 1
    for d in value:
        numel *= d
    if numel > MAX_ELEMENTS:
        raise NeoInputError(f"input {name!r}: {numel} elements is more than a NeuronCore input allows.")
    return InputShape(name, tuple(int(d) for d in value), dtype)


def derived_data_input_config(shapes: Sequence[InputShape]) -> str:
    """Return the DataInputConfig in its dict form (DescribeCompilationJob's DerivedDataInputConfig)."""
    return json.dumps(
        {s.name: list(s.shape) if s.dtype is None else {"shape": list(s.shape), "dtype": s.dtype} for s in shapes}
    )


# --- CompilerOptions ---------------------------------------------------------------------------------


def parse_compiler_options(
    raw: CompilerOptions | str | Mapping[str, Any] | Sequence[str] | None,
) -> CompilerOptions:
    """Parse OutputConfig.CompilerOptions: a JSON string holding a flag string, a list or an object of flags.

    A bare flag string (``--fast-math none``) is accepted as well; None or blank means the defaults.
    """
    if isinstance(raw, CompilerOptions):
        return raw
    if raw is None:
        return CompilerOptions()
    decoded: Any = raw
    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            return CompilerOptions()
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            decoded = text
    return _from_tokens(_tokens_of(decoded))


def _tokens_of(decoded: Any) -> list[str]:
    if isinstance(decoded, str):
        return _split(decoded) if decoded.strip() else []
    if isinstance(decoded, Mapping):
        return _tokens_from_mapping(decoded)
    if _is_list(decoded):
        tokens = [str(t) for t in decoded]
        return _split(tokens[0]) if len(tokens) == 1 and " " in tokens[0] else tokens
    raise NeoInputError(f"expected a JSON string, list or object, got {type(decoded).__name__}.")


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


def _bool(flag: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise NeoInputError(f"{flag} takes true or false, got {value!r}.")


def _int(flag: str, value: str | None, low: int, high: int) -> int:
    try:
        number = int(value) if value is not None else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise NeoInputError(f"{flag} takes an integer from {low} to {high}, got {value!r}.")
    return number


def _ratio(flag: str, args: list[str]) -> float:
    try:
        value = float(args[0]) if args else -1.0
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise NeoInputError(f"{flag} takes a number in (0, 1], got {args}.")
    return value


def _one_of(flag: str, args: list[str], allowed: tuple[str, ...]) -> str:
    if len(args) != 1 or args[0] not in allowed:
        raise NeoInputError(f"{flag} takes one of {', '.join(allowed)}, got {args}.")
    return args[0]


def _unknown_flag(flag: str) -> NeoInputError:
    return NeoInputError(
        f"unknown flag {flag!r}. Supported: --fast-math, --fp32-cast, --neuroncore-pipeline-cores "
        "(alias --num-neuroncores), --dynamic-batch-size, -O1/-O2/-O3, --minimum-segment-size, "
        "--single-fusion-ratio-threshold, --fallback/--no-fallback, --verbose, --execution-policy, "
        + ", ".join(f"--{f}" for f in NO_EFFECT_FLAGS)
        + "."
    )


def _values_after(tokens: list[str], index: int) -> list[str]:
    out = []
    j = index + 1
    while j < len(tokens) and not tokens[j].startswith("-"):
        out.append(tokens[j])
        j += 1
    return out


def _from_tokens(tokens: list[str]) -> CompilerOptions:
    fields: dict[str, Any] = {}
    notes: list[str] = []
    fast_math: list[str] = []
    fp32_cast: str | None = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("-"):
            raise NeoInputError(f"unexpected value {token!r} (every setting starts with a flag).")
        flag, _, inline = token.partition("=")
        args = [inline] if inline else _values_after(tokens, i)
        # How many of the values after the flag it takes; an inline "=value" takes none of them.
        consumed = 0 if inline else len(args)
        single = 0 if inline else 1
        name = flag.lstrip("-").replace("_", "-")
        if flag.startswith("-O") and not flag.startswith("--"):
            fields["optimization_level"] = _int("-O", flag[2:] or (args[0] if args else None), 1, 3)
            consumed = 0 if flag[2:] or inline else 1
        elif name == "fast-math":
            if not args:
                raise NeoInputError(f"--fast-math needs a value: one or more of {', '.join(FAST_MATH_VALUES)}.")
            for value in args:
                if value not in FAST_MATH_VALUES:
                    raise NeoInputError(f"--fast-math value {value!r} is not one of {', '.join(FAST_MATH_VALUES)}.")
            fast_math += args
        elif name == "fp32-cast":
            fp32_cast = _one_of("--fp32-cast", args, FP32_CAST_VALUES)
        elif name in ("neuroncore-pipeline-cores", "num-neuroncores"):
            fields["pipeline_cores"] = _int(flag, args[0] if args else None, 1, MAX_PIPELINE_CORES)
            consumed = single
            if name == "num-neuroncores":
                notes.append("--num-neuroncores is the older name of --neuroncore-pipeline-cores")
        elif name in ("dynamic-batch-size", "fallback"):
            fields[name.replace("-", "_")] = _bool(flag, args[0]) if args else True
            consumed = min(consumed, 1)
        elif name == "no-fallback":
            fields["fallback"] = False
        elif name == "minimum-segment-size":
            fields["minimum_segment_size"] = _int(flag, args[0] if args else None, 1, 1_000_000)
            consumed = single
        elif name == "single-fusion-ratio-threshold":
            fields["single_fusion_ratio_threshold"] = _ratio(flag, args)
            consumed = single
        elif name == "verbose":
            fields["verbose"] = args[0] if args else "INFO"
            consumed = min(consumed, 1)
        elif name == "execution-policy":
            fields["execution_policy"] = _one_of("--execution-policy", args, EXECUTION_POLICIES)
            consumed = single
        elif name in NO_EFFECT_FLAGS:
            notes.append(f"--{name} is accepted; it changes nothing in the emulator")
            consumed = 0
        else:
            raise _unknown_flag(flag)
        if consumed < len(args) and name != "fast-math" and not inline:
            raise NeoInputError(f"{flag} got unexpected extra value(s) {args[consumed:]}.")
        i += 1 + consumed
    cast_mode, relayout = _resolve_cast(fast_math, fp32_cast)
    return CompilerOptions(cast_mode=cast_mode, fast_relayout=relayout, notes=tuple(notes), **fields)


def _resolve_cast(fast_math: list[str], fp32_cast: str | None) -> tuple[str, bool]:
    cast_mode, relayout = "fp32-cast-all", True
    for value in fast_math:
        if value == "all":
            cast_mode, relayout = "fp32-cast-all", True
        elif value == "none":
            cast_mode, relayout = "fp32-cast-matmult-bf16", False
        elif value in ("fast-relayout", "no-fast-relayout"):
            relayout = value == "fast-relayout"
        else:
            cast_mode = value
    if fp32_cast is not None:
        cast_mode = _FP32_CAST_TO_MODE[fp32_cast]  # the legacy flag wins when both are given (docs/compiler.md)
    return cast_mode, relayout
