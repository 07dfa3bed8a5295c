"""CreateCompilationJob's inputs as the compiler reads them: the platform's one grammar, the compiler's errors.

The grammar itself (``neurondock_platform.services.compilation_inputs``) is torch-free and shared with
the API, which refuses a bad request with the same reason before the job is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from neurondock_platform.services import compilation_inputs as grammar
from neurondock_platform.services.compilation_inputs import CompilerOptions, InputShape

from .errors import CompilerOptionsError, InputConfigurationError

__all__ = ["CompilerOptions", "InputShape", "parse_compiler_options", "parse_data_input_config"]


def parse_data_input_config(raw: str | Mapping[str, Any] | Sequence[Any]) -> list[InputShape]:
    """Parse DataInputConfig; a refusal is an InputConfigurationError carrying the grammar's reason."""
    try:
        return grammar.parse_data_input_config(raw)
    except grammar.NeoInputError as exc:
        raise InputConfigurationError(reason=exc.reason) from None


def parse_compiler_options(
    raw: CompilerOptions | str | Mapping[str, Any] | Sequence[str] | None,
) -> CompilerOptions:
    """Parse CompilerOptions; a refusal is a CompilerOptionsError carrying the grammar's reason."""
    try:
        return grammar.parse_compiler_options(raw)
    except grammar.NeoInputError as exc:
        raise CompilerOptionsError(reason=exc.reason) from None
