"""What the AWS JSON protocols' handlers share: an operation table, and bodies with epoch timestamps."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class OperationTable(dict[str, Handler]):
    """Operation name → handler (request members in, response members out)."""

    def operation(self, name: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            if name in self:
                raise RuntimeError(f"operation {name} registered twice")
            self[name] = fn
            return fn

        return register


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(payload: Any) -> str:
    """A response body: timestamps as epoch seconds, which botocore parses for every JSON service."""
    return json.dumps(payload, default=_default)
