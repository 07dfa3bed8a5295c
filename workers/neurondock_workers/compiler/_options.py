"""CompilerOptions: the neuron-cc and torch-neuron settings that change what the emulator does.

Flag meanings follow neuron-cc's command-line reference and torch-neuron's trace kwargs
(/work/shared/reference/inferentia.md §2.1, §2.5, §2.6). Anything else is refused with a reason.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import CompilerOptionsError

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
MAX_PIPELINE_CORES = 64  # NeuronCore Pipeline spans up to 16 chips / 64 cores (§1.1)

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


def parse_compiler_options(
    raw: CompilerOptions | str | Mapping[str, Any] | Sequence[str] | None,
) -> CompilerOptions:
    """Parse OutputConfig.CompilerOptions (a JSON string holding a flag string, a list or an object)."""
    if isinstance(raw, CompilerOptions):
        return raw
    if raw is None:
        return CompilerOptions()
    tokens: list[str]
    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            return CompilerOptions()
        try:
            decoded: Any = json.loads(text)
        except json.JSONDecodeError:
            decoded = text  # a bare flag string ("--fast-math none") is accepted as well
        if isinstance(decoded, str):
            return _from_tokens(_split(decoded))
        if isinstance(decoded, Mapping | list):
            return parse_compiler_options(decoded)
        raise CompilerOptionsError(
            reason=f"expected a JSON string, list or object, got {type(decoded).__name__}."
        )
    if isinstance(raw, Mapping):
        tokens = _tokens_from_mapping(raw)
    else:
        tokens = [str(t) for t in raw]
        if len(tokens) == 1 and " " in tokens[0]:
            tokens = _split(tokens[0])
    return _from_tokens(tokens)


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise CompilerOptionsError(reason=f"could not split the flag string ({exc}).") from None


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
    raise CompilerOptionsError(reason=f"{flag} takes true or false, got {value!r}.")


def _int(flag: str, value: str | None, low: int, high: int) -> int:
    try:
        number = int(value) if value is not None else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise CompilerOptionsError(reason=f"{flag} takes an integer from {low} to {high}, got {value!r}.")
    return number


def _from_tokens(tokens: list[str]) -> CompilerOptions:
    fields: dict[str, Any] = {}
    notes: list[str] = []
    fast_math: list[str] = []
    fp32_cast: str | None = None
    i = 0

    def values_after(index: int) -> list[str]:
        out = []
        j = index + 1
        while j < len(tokens) and not tokens[j].startswith("-"):
            out.append(tokens[j])
            j += 1
        return out

    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("-"):
            raise CompilerOptionsError(
                reason=f"unexpected value {token!r} (every setting starts with a flag)."
            )
        flag, _, inline = token.partition("=")
        args = [inline] if inline else values_after(i)
        consumed = 0 if inline else len(args)
        name = flag.lstrip("-").replace("_", "-")
        if flag.startswith("-O") and not flag.startswith("--"):
            level = flag[2:] or (args[0] if args else None)
            fields["optimization_level"] = _int("-O", level, 1, 3)
            consumed = 0 if flag[2:] or inline else 1
        elif name == "fast-math":
            if not args:
                raise CompilerOptionsError(
                    reason=f"--fast-math needs a value: one or more of {', '.join(FAST_MATH_VALUES)}."
                )
            for value in args:
                if value not in FAST_MATH_VALUES:
                    raise CompilerOptionsError(
                        reason=f"--fast-math value {value!r} is not one of {', '.join(FAST_MATH_VALUES)}."
                    )
            fast_math += args
        elif name == "fp32-cast":
            if len(args) != 1 or args[0] not in FP32_CAST_VALUES:
                raise CompilerOptionsError(
                    reason=f"--fp32-cast takes one of {', '.join(FP32_CAST_VALUES)}, got {args}."
                )
            fp32_cast = args[0]
        elif name in ("neuroncore-pipeline-cores", "num-neuroncores"):
            fields["pipeline_cores"] = _int(flag, args[0] if args else None, 1, MAX_PIPELINE_CORES)
            consumed = 0 if inline else 1
            if name == "num-neuroncores":
                notes.append("--num-neuroncores is the older name of --neuroncore-pipeline-cores")
        elif name in ("dynamic-batch-size", "fallback"):
            key = name.replace("-", "_")
            fields[key] = _bool(flag, args[0]) if args else True
            consumed = min(consumed, 1)
        elif name == "no-fallback":
            fields["fallback"] = False
        elif name == "minimum-segment-size":
            fields["minimum_segment_size"] = _int(flag, args[0] if args else None, 1, 1_000_000)
            consumed = 0 if inline else 1
        elif name == "single-fusion-ratio-threshold":
            fields["single_fusion_ratio_threshold"] = _ratio(flag, args)
            consumed = 0 if inline else 1
        elif name == "verbose":
            fields["verbose"] = args[0] if args else "INFO"
            consumed = min(consumed, 1)
        elif name == "execution-policy":
            if len(args) != 1 or args[0] not in EXECUTION_POLICIES:
                raise CompilerOptionsError(
                    reason=f"--execution-policy takes one of {', '.join(EXECUTION_POLICIES)}, got {args}."
                )
            fields["execution_policy"] = args[0]
            consumed = 0 if inline else 1
        elif name in NO_EFFECT_FLAGS:
            notes.append(f"--{name} is accepted; it changes nothing in the emulator")
            consumed = 0
        else:
            raise CompilerOptionsError(
                reason=f"unknown flag {flag!r}. Supported: --fast-math, --fp32-cast, "
                "--neuroncore-pipeline-cores "
                "(alias --num-neuroncores), --dynamic-batch-size, -O1/-O2/-O3, --minimum-segment-size, "
                "--single-fusion-ratio-threshold, --fallback/--no-fallback, --verbose, --execution-policy, "
                + ", ".join(f"--{f}" for f in NO_EFFECT_FLAGS)
                + "."
            )
        if consumed < len(args) and name != "fast-math" and not inline:
            raise CompilerOptionsError(reason=f"{flag} got unexpected extra value(s) {args[consumed:]}.")
        i += 1 + consumed
    cast_mode, relayout = _resolve_cast(fast_math, fp32_cast)
    return CompilerOptions(cast_mode=cast_mode, fast_relayout=relayout, notes=tuple(notes), **fields)


def _ratio(flag: str, args: list[str]) -> float:
    try:
        value = float(args[0]) if args else -1.0
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise CompilerOptionsError(reason=f"{flag} takes a number in (0, 1], got {args}.")
    return value


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
        cast_mode = _FP32_CAST_TO_MODE[fp32_cast]  # the legacy flag wins when both are given (§2.5)
    return cast_mode, relayout
