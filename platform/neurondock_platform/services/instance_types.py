"""How much emulated hardware an instance type takes on a host."""

from __future__ import annotations

INF1_CHIPS = {"ml.inf1.xlarge": 1, "ml.inf1.2xlarge": 1, "ml.inf1.6xlarge": 4, "ml.inf1.24xlarge": 16}


def chips_for(instance_type: str) -> int:
    """Inferentia chips one instance of this type needs (0 for CPU and GPU types)."""
    return INF1_CHIPS.get(instance_type, 0)
