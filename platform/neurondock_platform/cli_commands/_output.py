"""Terminal output of the operator CLI: aligned tables, sizes, JSON for scripts, shared options."""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from neurondock_platform.cli_commands._client import Connection, resolve
from neurondock_platform.units import binary_size

F = TypeVar("F", bound=Callable[..., Any])
DASH = "-"


def connection_options(fn: F) -> F:
    """Add --endpoint-url/--data-dir/--region/--output and pass ``conn`` and ``output`` to the command."""

    @click.option("--endpoint-url", default=None, help="neurondock's URL (default: $AWS_ENDPOINT_URL_SAGEMAKER).")
    @click.option("--data-dir", default=None, help="Use the root key pair from this data dir's credentials.json.")
    @click.option("--region", default=None, help="Region to sign for (default: $AWS_DEFAULT_REGION or us-east-1).")
    @click.option(
        "--output",
        "-o",
        "output",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="Human-readable tables, or JSON for scripts.",
    )
    @functools.wraps(fn)
    def wrapper(*args: Any, endpoint_url: str | None, data_dir: str | None, region: str | None, **kwargs: Any) -> Any:
        kwargs["conn"] = resolve(endpoint_url, data_dir, region)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def cell(value: Any) -> str:
    if value is None or value == "":
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value) or DASH
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, max_width: int | None = None) -> str:
    """Return rows as an aligned plain-text table; the widest column is cut to fit the terminal."""
    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text_rows)]) for i, h in enumerate(headers)]
    limit = max_width or shutil.get_terminal_size((160, 24)).columns
    while sum(widths) + 2 * (len(widths) - 1) > limit and max(widths) > 12:
        widest = widths.index(max(widths))
        widths[widest] -= 1

    def fit(text: str, width: int) -> str:
        return text if len(text) <= width else text[: max(1, width - 1)] + "…"

    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in text_rows:
        lines.append("  ".join(fit(v, w).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def facts(pairs: Sequence[tuple[str, Any]]) -> str:
    """Return 'Label: value' lines, aligned."""
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k + ':':<{width + 1}} {cell(v)}" for k, v in pairs)


def size(value: Any) -> str:
    return DASH if value is None else binary_size(value)


def usd(value: Any, digits: int = 3) -> str:
    return DASH if value is None else f"${float(value):,.{digits}f}"


__all__ = ["Connection", "cell", "connection_options", "emit_json", "facts", "size", "table", "usd"]
