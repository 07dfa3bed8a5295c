"""The compiler reads CompilerOptions and DataInputConfig with the platform's grammar, refusing with its errors.

What the grammar accepts and why it refuses is tested once, in
``tests/unit/control_plane/test_cp_compilation_inputs.py``; here, that a refusal reaches the compiler's
callers as the typed error the job's FailureReason comes from.
"""

from __future__ import annotations

import pickle

import pytest

from neurondock_platform.services import compilation_inputs as grammar
from neurondock_workers.compiler import (
    CompilerOptions,
    CompilerOptionsError,
    InputConfigurationError,
    parse_compiler_options,
    parse_data_input_config,
)


def test_the_compiler_uses_the_platform_grammar():
    assert CompilerOptions is grammar.CompilerOptions
    assert parse_compiler_options("--fast-math none") == grammar.parse_compiler_options("--fast-math none")
    assert parse_data_input_config("[[1, 4]]") == grammar.parse_data_input_config("[[1, 4]]")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("--frobnicate", "unknown flag '--frobnicate'"),
        ("--execution-policy quick", "--execution-policy takes one of auto, device-numerics, fastest"),
    ],
)
def test_option_refusals_are_compiler_options_errors(raw, fragment):
    with pytest.raises(CompilerOptionsError) as info:
        parse_compiler_options(raw)
    assert fragment in str(info.value)
    # The API layer maps this to a synchronous ValidationException.
    assert info.value.api_code == "ValidationException"
    assert info.value.failure_reason.startswith("ClientError: CompilerOptions: ")


def test_shape_refusals_are_input_configuration_errors():
    with pytest.raises(InputConfigurationError) as info:
        parse_data_input_config('{"input0": [1, 0]}')
    assert info.value.failure_reason == (
        "ClientError: InputConfiguration: input 'input0': every dimension must be a positive integer, got [1, 0]."
    )


def test_options_error_pickles():
    err = CompilerOptionsError(reason="unknown flag '--x'.")
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is CompilerOptionsError
    assert clone.failure_reason == err.failure_reason


def test_public_names_are_exported():
    import neurondock_workers.compiler as compiler

    for name in compiler.__all__:
        assert getattr(compiler, name) is not None, name
    assert {"compile_model", "CompileResult", "CompileProcess", "CompileCache", "CompilerError"} <= set(
        compiler.__all__
    )
