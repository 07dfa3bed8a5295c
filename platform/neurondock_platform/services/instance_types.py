"""How much emulated hardware an instance type takes on a host."""

from __future__ import annotations

from neurondock_platform import catalog


def chips_for(instance_type: str) -> int:
    """Inferentia chips one instance of this type needs (0 for CPU and GPU types)."""
    entry = catalog.get(instance_type)
    return entry.chips if entry is not None else 0
