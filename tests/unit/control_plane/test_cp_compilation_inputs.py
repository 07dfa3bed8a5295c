"""The one grammar of CreateCompilationJob's DataInputConfig and CompilerOptions (API and compiler alike).

Each input is paired with what the grammar must make of it: the parsed result, or the exact reason it
is refused (the API returns that reason in its ValidationException; the compiler in its FailureReason).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest

from neurondock_platform.services.compilation_inputs import (
    CompilerOptions,
    InputShape,
    NeoInputError,
    derived_data_input_config,
    parse_compiler_options,
    parse_data_input_config,
)

AT_LEAST_ONE = 'DataInputConfig must name at least one input shape, e.g. {"input0": [1,3,224,224]} or [[1,3,224,224]].'
DTYPES = "['bfloat16', 'bool', 'float16', 'float32', 'int32', 'int64']"
FAST_MATH = (
    "all, none, fast-relayout, no-fast-relayout, fp32-cast-all, fp32-cast-all-fp16, fp32-cast-matmult, "
    "fp32-cast-matmult-bf16, fp32-cast-matmult-fp16"
)
FP32_CAST = "all, matmult, matmult-fp16, matmult-bf16, all-fp16"
SUPPORTED_FLAGS = (
    "Supported: --fast-math, --fp32-cast, --neuroncore-pipeline-cores (alias --num-neuroncores), "
    "--dynamic-batch-size, -O1/-O2/-O3, --minimum-segment-size, --single-fusion-ratio-threshold, "
    "--fallback/--no-fallback, --verbose, --execution-policy, --enable-saturate-infinity, "
    "--enable-fast-loading-neuron-binaries, --enable-fast-context-switch."
)
OLD_NAME = "--num-neuroncores is the older name of --neuroncore-pipeline-cores"
NONE = {"cast_mode": "fp32-cast-matmult-bf16", "fast_relayout": False}


class Refused(str):
    """The reason an input must be refused with."""


# (DataInputConfig, the shapes it declares as (name, shape, dtype) or the reason it is refused)
DATA_INPUT_CONFIGS: list[tuple[str, Any]] = [
    ('{"input0": [1, 3, 224, 224]}', [("input0", (1, 3, 224, 224), None)]),
    ("[[1, 3, 224, 224]]", [("input0", (1, 3, 224, 224), None)]),
    ("[[1, 3, 224, 224], [1, 10]]", [("input0", (1, 3, 224, 224), None), ("input1", (1, 10), None)]),
    ("[1, 3, 224, 224]", [("input0", (1, 3, 224, 224), None)]),
    ('{"a": [1, 8], "b": [1, 8]}', [("a", (1, 8), None), ("b", (1, 8), None)]),
    ('{"ids": {"shape": [1, 32], "dtype": "int64"}}', [("ids", (1, 32), "int64")]),
    (
        '{"ids": {"shape": [1, 32], "dtype": "complex64"}}',
        Refused(f"input 'ids': dtype 'complex64' is not one of {DTYPES}."),
    ),
    ('{"ids": {"shape": [1, 32]}}', [("ids", (1, 32), None)]),
    ('{"ids": {"dtype": "int64"}}', Refused("input 'ids': the shape must be a non-empty list of integers.")),
    (
        "{input0: [1]}",
        Refused("DataInputConfig is not valid JSON (Expecting property name enclosed in double quotes)."),
    ),
    ("", Refused("DataInputConfig is not valid JSON (Expecting value).")),
    ("{}", Refused(AT_LEAST_ONE)),
    ("[]", Refused(AT_LEAST_ONE)),
    ("[[]]", Refused("input 'input0': the shape must be a non-empty list of integers.")),
    ('"shape"', Refused(AT_LEAST_ONE)),
    ("7", Refused(AT_LEAST_ONE)),
    ("null", Refused(AT_LEAST_ONE)),
    ('{"x": [1, 0]}', Refused("input 'x': every dimension must be a positive integer, got [1, 0].")),
    ('{"x": [1, -1]}', Refused("input 'x': every dimension must be a positive integer, got [1, -1].")),
    ('{"x": [1, 2.0]}', Refused("input 'x': every dimension must be a positive integer, got [1, 2.0].")),
    ('{"x": [true, 2]}', Refused("input 'x': every dimension must be a positive integer, got [True, 2].")),
    ('{"x": "1,2"}', Refused("input 'x': the shape must be a non-empty list of integers.")),
    ("[[1,1,1,1,1,1,1,1]]", [("input0", (1,) * 8, None)]),
    ("[[1,1,1,1,1,1,1,1,1]]", Refused("input 'input0': at most 8 dimensions are supported.")),
    ("[[65536, 65536]]", Refused("input 'input0': 4294967296 elements is more than a NeuronCore input allows.")),
    ("[[46341, 46341]]", Refused("input 'input0': 2147488281 elements is more than a NeuronCore input allows.")),
]

# (CompilerOptions, the fields that differ from torch-neuron's defaults, or the reason it is refused)
COMPILER_OPTIONS: list[tuple[str, Any]] = [
    ("", {}),
    ("   ", {}),
    ('""', {}),
    ('"--verbose 1 --num-neuroncores 2 -O2"', {"pipeline_cores": 2, "verbose": "1", "notes": (OLD_NAME,)}),
    ("--fast-math none", NONE),
    ("--fast-math fp32-cast-matmult no-fast-relayout", {"cast_mode": "fp32-cast-matmult", "fast_relayout": False}),
    ("--fast-math", Refused(f"--fast-math needs a value: one or more of {FAST_MATH}.")),
    ("--fast-math turbo", Refused(f"--fast-math value 'turbo' is not one of {FAST_MATH}.")),
    ("--fp32-cast matmult-fp16", {"cast_mode": "fp32-cast-matmult-fp16"}),
    ("--fp32-cast", Refused(f"--fp32-cast takes one of {FP32_CAST}, got [].")),
    ("--fp32-cast all extra", Refused(f"--fp32-cast takes one of {FP32_CAST}, got ['all', 'extra'].")),
    ("--neuroncore-pipeline-cores 4", {"pipeline_cores": 4}),
    ("--neuroncore-pipeline-cores=4", {"pipeline_cores": 4}),
    ("--neuroncore-pipeline-cores 0", Refused("--neuroncore-pipeline-cores takes an integer from 1 to 64, got '0'.")),
    ("--neuroncore-pipeline-cores x", Refused("--neuroncore-pipeline-cores takes an integer from 1 to 64, got 'x'.")),
    ("--neuroncore-pipeline-cores 4 5", Refused("--neuroncore-pipeline-cores got unexpected extra value(s) ['5'].")),
    ("--num-neuroncores 16", {"pipeline_cores": 16, "notes": (OLD_NAME,)}),
    ("--dynamic-batch-size", {"dynamic_batch_size": True}),
    ("--dynamic-batch-size true", {"dynamic_batch_size": True}),
    ("--dynamic-batch-size perhaps", Refused("--dynamic-batch-size takes true or false, got 'perhaps'.")),
    ("--dynamic-batch-size true false", Refused("--dynamic-batch-size got unexpected extra value(s) ['false'].")),
    ("--fallback false", {"fallback": False}),
    ("--no-fallback", {"fallback": False}),
    ("-O1", {"optimization_level": 1}),
    ("-O 3", {"optimization_level": 3}),
    ("-O4", Refused("-O takes an integer from 1 to 3, got '4'.")),
    ("-O", Refused("-O takes an integer from 1 to 3, got None.")),
    ("--minimum-segment-size 3", {"minimum_segment_size": 3}),
    ("--minimum-segment-size", Refused("--minimum-segment-size takes an integer from 1 to 1000000, got None.")),
    ("--single-fusion-ratio-threshold 0.5", {"single_fusion_ratio_threshold": 0.5}),
    (
        "--single-fusion-ratio-threshold 1.5",
        Refused("--single-fusion-ratio-threshold takes a number in (0, 1], got ['1.5']."),
    ),
    (
        "--single-fusion-ratio-threshold nan-ish",
        Refused("--single-fusion-ratio-threshold takes a number in (0, 1], got ['nan-ish']."),
    ),
    ("--verbose", {"verbose": "INFO"}),
    ("--verbose DEBUG", {"verbose": "DEBUG"}),
    ("--verbose DEBUG INFO", Refused("--verbose got unexpected extra value(s) ['INFO'].")),
    ("--execution-policy fastest", {"execution_policy": "fastest"}),
    (
        "--execution-policy slowest",
        Refused("--execution-policy takes one of auto, device-numerics, fastest, got ['slowest']."),
    ),
    (
        "--enable-fast-context-switch",
        {"notes": ("--enable-fast-context-switch is accepted; it changes nothing in the emulator",)},
    ),
    (
        "--enable-fast-context-switch yes",
        Refused("--enable-fast-context-switch got unexpected extra value(s) ['yes']."),
    ),
    ("--frobnicate", Refused(f"unknown flag '--frobnicate'. {SUPPORTED_FLAGS}")),
    ("--frobnicate=1", Refused(f"unknown flag '--frobnicate'. {SUPPORTED_FLAGS}")),
    ("stray", Refused("unexpected value 'stray' (every setting starts with a flag).")),
    ('"unbalanced', Refused("could not split the flag string (No closing quotation).")),
    ('["--fast-math", "none"]', NONE),
    ('["--fast-math none -O3"]', {**NONE, "optimization_level": 3}),
    ('["-O9"]', Refused("-O takes an integer from 1 to 3, got '9'.")),
    ('{"--fast-math": "none"}', NONE),
    (
        '{"fast_math": ["fp32-cast-all-fp16"], "-O3": true}',
        {"cast_mode": "fp32-cast-all-fp16", "optimization_level": 3},
    ),
    ('{"dynamic-batch-size": true, "fallback": false}', {"dynamic_batch_size": True, "fallback": False}),
    (
        '{"neuroncore-pipeline-cores": 100}',
        Refused("--neuroncore-pipeline-cores takes an integer from 1 to 64, got '100'."),
    ),
    ('{"O": 2}', {}),
    ('{"mystery": null}', Refused(f"unknown flag '--mystery'. {SUPPORTED_FLAGS}")),
    ("42", Refused("expected a JSON string, list or object, got int.")),
    ("true", Refused("expected a JSON string, list or object, got bool.")),
    ("null", Refused("expected a JSON string, list or object, got NoneType.")),
    ("1.5", Refused("expected a JSON string, list or object, got float.")),
]


def _verdict(parse, raw):
    try:
        return parse(raw)
    except NeoInputError as exc:
        return Refused(exc.reason)


def _changed(options: CompilerOptions) -> dict[str, Any]:
    defaults = asdict(CompilerOptions())
    return {k: v for k, v in asdict(options).items() if v != defaults[k]}


@pytest.mark.parametrize(("raw", "expected"), DATA_INPUT_CONFIGS)
def test_data_input_config(raw, expected):
    got = _verdict(parse_data_input_config, raw)
    if isinstance(expected, Refused):
        assert got == expected
    else:
        assert [(s.name, s.shape, s.dtype) for s in got] == expected


@pytest.mark.parametrize(("raw", "expected"), COMPILER_OPTIONS)
def test_compiler_options(raw, expected):
    got = _verdict(parse_compiler_options, raw)
    if isinstance(expected, Refused):
        assert got == expected
    else:
        assert _changed(got) == expected


def test_the_corpus_holds_both_verdicts():
    for corpus in (DATA_INPUT_CONFIGS, COMPILER_OPTIONS):
        refused = [raw for raw, expected in corpus if isinstance(expected, Refused)]
        assert 0 < len(refused) < len(corpus)
    assert len(DATA_INPUT_CONFIGS) + len(COMPILER_OPTIONS) == 82


def test_already_decoded_inputs_parse_the_same_way():
    # The compiler's tests and the SDK hand over Python values rather than JSON text.
    assert parse_data_input_config([1, 3, 8, 8]) == [InputShape("input0", (1, 3, 8, 8))]
    assert parse_data_input_config([{"shape": [1, 128], "dtype": "int64"}])[0].dtype == "int64"
    listed = parse_compiler_options(["--fast-math", "fp32-cast-matmult", "-O3"])
    assert (listed.cast_mode, listed.optimization_level) == ("fp32-cast-matmult", 3)
    mapped = parse_compiler_options({"--neuroncore-pipeline-cores": 4, "dynamic_batch_size": True, "fallback": False})
    assert (mapped.pipeline_cores, mapped.dynamic_batch_size, mapped.fallback) == (4, True, False)
    assert parse_compiler_options(mapped) is mapped


def test_defaults_match_torch_neuron():
    opts = parse_compiler_options(None)
    assert opts == CompilerOptions()
    assert (opts.cast_mode, opts.cast_dtype, opts.cast_scope) == ("fp32-cast-all", "bfloat16", "all")
    assert (opts.minimum_segment_size, opts.single_fusion_ratio_threshold, opts.fallback) == (2, 0.6, True)
    assert opts.pipeline_cores == 1 and opts.optimization_level == 2 and not opts.dynamic_batch_size
    assert opts.execution_policy == "auto"
    assert opts.neuron_cc_args() == ["--fast-math", "fp32-cast-all", "fast-relayout", "-O2"]


@pytest.mark.parametrize(
    ("raw", "mode", "relayout"),
    [
        ("--fast-math none", "fp32-cast-matmult-bf16", False),
        ("--fast-math fp32-cast-matmult-fp16 no-fast-relayout", "fp32-cast-matmult-fp16", False),
        ("--fast-math fp32-cast-all-fp16", "fp32-cast-all-fp16", True),
        ("--fast-math none --fp32-cast all", "fp32-cast-all", False),  # the legacy flag wins
        ("--fp32-cast=matmult-fp16", "fp32-cast-matmult-fp16", True),
    ],
)
def test_cast_policies(raw, mode, relayout):
    opts = parse_compiler_options(raw)
    assert (opts.cast_mode, opts.fast_relayout) == (mode, relayout)


def test_cache_key_ignores_verbosity_but_not_casts():
    assert parse_compiler_options("--verbose 1").cache_key() == parse_compiler_options(None).cache_key()
    assert parse_compiler_options("--fast-math none").cache_key() != parse_compiler_options(None).cache_key()


def test_derived_data_input_config_is_the_dict_form():
    shapes = parse_data_input_config('[[1, 3, 8, 8], {"shape": [1, 4], "dtype": "int64"}]')
    assert json.loads(derived_data_input_config(shapes)) == {
        "input0": [1, 3, 8, 8],
        "input1": {"shape": [1, 4], "dtype": "int64"},
    }
