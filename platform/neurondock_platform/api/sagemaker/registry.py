"""The table of SageMaker operations: ``X-Amz-Target: SageMaker.<Op>`` → handler."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]
OPERATIONS: dict[str, Handler] = {}


def operation(name: str) -> Callable[[Handler], Handler]:
    """Register a handler for a SageMaker operation name (e.g. ``"CreateModel"``)."""

    def decorator(fn: Handler) -> Handler:
        if name in OPERATIONS:
            raise RuntimeError(f"operation {name} registered twice")
        OPERATIONS[name] = fn
        return fn

    return decorator
