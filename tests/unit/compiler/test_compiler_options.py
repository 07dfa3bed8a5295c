"""CompilerOptions: the Neuron flags that matter are parsed; anything else is refused with a reason."""

from __future__ import annotations

import json
import pickle

import pytest

from neurondock_workers.compiler import CompilerOptions, CompilerOptionsError, parse_compiler_options


def test_defaults_match_torch_neuron():
    opts = parse_compiler_options(None)
    assert opts == CompilerOptions()
    assert (opts.cast_mode, opts.cast_dtype, opts.cast_scope) == ("fp32-cast-all", "bfloat16", "all")
    assert (opts.minimum_segment_size, opts.single_fusion_ratio_threshold, opts.fallback) == (2, 0.6, True)
    assert opts.pipeline_cores == 1 and opts.optimization_level == 2 and not opts.dynamic_batch_size
    assert opts.execution_policy == "auto"


def test_sagemaker_json_string_holding_a_flag_string():
    # The OutputConfig doc's own example: "CompilerOptions": "\"--verbose 1 --num-neuroncores 2 -O2\"".
    opts = parse_compiler_options(json.dumps("--verbose 1 --num-neuroncores 2 -O2"))
    assert opts.pipeline_cores == 2
    assert opts.optimization_level == 2
    assert opts.verbose == "1"
    assert any("--num-neuroncores" in note for note in opts.notes)


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
    assert opts.cast_mode == mode
    assert opts.fast_relayout is relayout


def test_dict_and_list_forms():
    opts = parse_compiler_options(
        {"--neuroncore-pipeline-cores": 4, "dynamic_batch_size": True, "fallback": False}
    )
    assert (opts.pipeline_cores, opts.dynamic_batch_size, opts.fallback) == (4, True, False)
    listed = parse_compiler_options(json.dumps(["--fast-math", "fp32-cast-matmult", "-O3"]))
    assert listed.cast_mode == "fp32-cast-matmult" and listed.optimization_level == 3
    assert parse_compiler_options("--dynamic-batch-size").dynamic_batch_size is True
    assert (
        parse_compiler_options(
            "--minimum-segment-size 3 --single-fusion-ratio-threshold 0.8"
        ).minimum_segment_size
        == 3
    )


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("--frobnicate", "unknown flag '--frobnicate'"),
        ("--fast-math fastest", "--fast-math value 'fastest'"),
        ("--fp32-cast everything", "--fp32-cast takes one of"),
        ("--neuroncore-pipeline-cores 0", "integer from 1 to 64"),
        ("--neuroncore-pipeline-cores many", "integer from 1 to 64"),
        ("-O7", "-O takes an integer from 1 to 3"),
        ("--dynamic-batch-size maybe", "takes true or false"),
        ("--single-fusion-ratio-threshold 1.5", "(0, 1]"),
        ("stray", "unexpected value 'stray'"),
        ("--enable-fast-context-switch now", "unexpected extra value"),
        ("--execution-policy quick", "--execution-policy takes one of auto, device-numerics, fastest"),
    ],
)
def test_refusals_say_why(raw, fragment):
    with pytest.raises(CompilerOptionsError) as info:
        parse_compiler_options(raw)
    assert fragment in str(info.value)
    # The API layer maps this to a synchronous ValidationException.
    assert info.value.api_code == "ValidationException"
    assert info.value.failure_reason.startswith("ClientError: CompilerOptions: ")


def test_accepted_flags_without_effect_are_noted():
    opts = parse_compiler_options("--enable-saturate-infinity --enable-fast-loading-neuron-binaries")
    assert len(opts.notes) == 2


def test_options_error_pickles():
    err = CompilerOptionsError(reason="unknown flag '--x'.")
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is CompilerOptionsError
    assert clone.failure_reason == err.failure_reason


def test_cache_key_ignores_verbosity_but_not_casts():
    assert parse_compiler_options("--verbose 1").cache_key() == parse_compiler_options(None).cache_key()
    assert parse_compiler_options("--fast-math none").cache_key() != parse_compiler_options(None).cache_key()


def test_public_names_are_exported():
    import neurondock_workers.compiler as compiler

    for name in compiler.__all__:
        assert getattr(compiler, name) is not None, name
    assert {"compile_model", "CompileResult", "CompileProcess", "CompileCache", "CompilerError"} <= set(
        compiler.__all__
    )
