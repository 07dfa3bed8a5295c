"""The API's checks of DataInputConfig and CompilerOptions agree with the worker compiler's parsers.

The platform cannot import the workers, so it carries its own copy of the grammar; this runs both
over one corpus and requires the same verdict and the same reason.
"""

from __future__ import annotations

import pytest

from neurondock_platform.services import compilation_inputs as platform_side
from neurondock_workers.compiler import (
    CompilerOptionsError,
    InputConfigurationError,
    parse_compiler_options,
    parse_data_input_config,
)

DATA_INPUT_CONFIGS = [
    '{"input0": [1, 3, 224, 224]}',
    "[[1, 3, 224, 224]]",
    "[[1, 3, 224, 224], [1, 10]]",
    "[1, 3, 224, 224]",
    '{"a": [1, 8], "b": [1, 8]}',
    '{"ids": {"shape": [1, 32], "dtype": "int64"}}',
    '{"ids": {"shape": [1, 32], "dtype": "complex64"}}',
    '{"ids": {"shape": [1, 32]}}',
    '{"ids": {"dtype": "int64"}}',
    "{input0: [1]}",
    "",
    "{}",
    "[]",
    "[[]]",
    '"shape"',
    "7",
    "null",
    '{"x": [1, 0]}',
    '{"x": [1, -1]}',
    '{"x": [1, 2.0]}',
    '{"x": [true, 2]}',
    '{"x": "1,2"}',
    "[[1,1,1,1,1,1,1,1]]",
    "[[1,1,1,1,1,1,1,1,1]]",
    "[[65536, 65536]]",
    "[[46341, 46341]]",
]

COMPILER_OPTIONS = [
    "",
    "   ",
    '""',
    '"--verbose 1 --num-neuroncores 2 -O2"',
    "--fast-math none",
    "--fast-math fp32-cast-matmult no-fast-relayout",
    "--fast-math",
    "--fast-math turbo",
    "--fp32-cast matmult-fp16",
    "--fp32-cast",
    "--fp32-cast all extra",
    "--neuroncore-pipeline-cores 4",
    "--neuroncore-pipeline-cores=4",
    "--neuroncore-pipeline-cores 0",
    "--neuroncore-pipeline-cores x",
    "--neuroncore-pipeline-cores 4 5",
    "--num-neuroncores 16",
    "--dynamic-batch-size",
    "--dynamic-batch-size true",
    "--dynamic-batch-size perhaps",
    "--dynamic-batch-size true false",
    "--fallback false",
    "--no-fallback",
    "-O1",
    "-O 3",
    "-O4",
    "-O",
    "--minimum-segment-size 3",
    "--minimum-segment-size",
    "--single-fusion-ratio-threshold 0.5",
    "--single-fusion-ratio-threshold 1.5",
    "--single-fusion-ratio-threshold nan-ish",
    "--verbose",
    "--verbose DEBUG",
    "--verbose DEBUG INFO",
    "--execution-policy fastest",
    "--execution-policy slowest",
    "--enable-fast-context-switch",
    "--enable-fast-context-switch yes",
    "--frobnicate",
    "--frobnicate=1",
    "stray",
    '"unbalanced',
    '["--fast-math", "none"]',
    '["--fast-math none -O3"]',
    '["-O9"]',
    '{"--fast-math": "none"}',
    '{"fast_math": ["fp32-cast-all-fp16"], "-O3": true}',
    '{"dynamic-batch-size": true, "fallback": false}',
    '{"neuroncore-pipeline-cores": 100}',
    '{"O": 2}',
    '{"mystery": null}',
    "42",
    "true",
    "null",
    "1.5",
]


def _worker_verdict(parse, error_type, raw):
    try:
        parse(raw)
    except error_type as exc:
        return exc.kwargs.get("reason", exc.message)
    return None


def _platform_verdict(check, raw):
    try:
        check(raw)
    except platform_side.NeoInputError as exc:
        return exc.reason
    return None


@pytest.mark.parametrize("raw", DATA_INPUT_CONFIGS)
def test_data_input_config_verdicts_match_the_compiler(raw):
    expected = _worker_verdict(parse_data_input_config, InputConfigurationError, raw)
    assert _platform_verdict(platform_side.parse_data_input_config, raw) == expected


@pytest.mark.parametrize("raw", COMPILER_OPTIONS)
def test_compiler_option_verdicts_match_the_compiler(raw):
    expected = _worker_verdict(parse_compiler_options, CompilerOptionsError, raw)
    assert _platform_verdict(platform_side.check_compiler_options, raw) == expected


def test_the_corpus_holds_both_verdicts():
    verdicts = [_platform_verdict(platform_side.check_compiler_options, raw) for raw in COMPILER_OPTIONS]
    assert any(v is None for v in verdicts) and any(v is not None for v in verdicts)
    verdicts = [_platform_verdict(platform_side.parse_data_input_config, raw) for raw in DATA_INPUT_CONFIGS]
    assert any(v is None for v in verdicts) and any(v is not None for v in verdicts)


def test_parsed_shapes_match_the_compiler():
    for raw in DATA_INPUT_CONFIGS:
        try:
            worker = parse_data_input_config(raw)
        except InputConfigurationError:
            continue
        ours = platform_side.parse_data_input_config(raw)
        assert [(s.name, s.shape, s.dtype) for s in ours] == [(s.name, s.shape, s.dtype) for s in worker]
