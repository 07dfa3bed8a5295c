"""Jinja filters of the console: sizes, money, times and percentages, with '—' for the unknown."""

from __future__ import annotations

import datetime as dt
from typing import Any

from neurondock_platform.units import binary_size

DASH = "—"


def size(value: Any) -> str:
    """Render bytes as KiB/MiB/GiB."""
    return DASH if value is None else binary_size(value)


def usd(value: Any, digits: int = 3) -> str:
    """Render dollars."""
    if value is None:
        return DASH
    amount = float(value)
    if 0 < abs(amount) < 0.001:
        return f"${amount:.6f}"
    if abs(amount) >= 100:
        digits = min(digits, 2)
    return f"${amount:,.{digits}f}"


def number(value: Any, digits: int = 2) -> str:
    if value is None:
        return DASH
    if isinstance(value, int):
        return f"{value:,}"
    return f"{float(value):,.{digits}f}"


def percent(value: Any) -> str:
    if value is None:
        return DASH
    return f"{float(value):.1f}%"


def when(value: Any) -> str:
    """Render an ISO time or datetime as UTC, to the second."""
    if value is None or value == "":
        return DASH
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def ago(value: Any) -> str:
    """Render how long ago a time was."""
    if value is None:
        return DASH
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    seconds = (dt.datetime.now(dt.UTC) - value).total_seconds()
    if seconds < 90:
        return f"{max(0, int(seconds))} s ago"
    if seconds < 5400:
        return f"{int(seconds // 60)} min ago"
    if seconds < 172800:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def status_class(status: Any) -> str:
    """Return the CSS class of a status badge."""
    text = str(status or "")
    if text in ("InService", "COMPLETED", "Ready", "Active", "OK", "Successful"):
        return "ok"
    if text in (
        "Failed",
        "FAILED",
        "UpdateRollbackFailed",
        "OutOfService",
        "Inactive",
        "STOPPED",
        "ALARM",
        "Unfulfilled",
    ):
        return "bad"
    if text in ("Deleting", "STOPPING", "Stopped", "Stopping", "INSUFFICIENT_DATA", "Overridden"):
        return "muted"
    return "busy"


def core_span(cores: Any) -> str:
    """Render a replica's NeuronCores: ``4`` or ``4–7``."""
    if not cores:
        return DASH
    return str(cores[0]) if len(cores) == 1 else f"{cores[0]}–{cores[-1]}"


FILTERS = {
    "cores": core_span,
    "size": size,
    "usd": usd,
    "number": number,
    "percent": percent,
    "when": when,
    "ago": ago,
    "status_class": status_class,
}
