"""Human-readable quantities shared by the console and the CLI."""

from __future__ import annotations


def binary_size(value: float) -> str:
    """Render a byte count in B, KiB, MiB, GiB or TiB."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(amount) < 1024:
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"
