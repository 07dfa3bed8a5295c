"""The one way a test waits: poll a condition until it holds, and fail saying what did not happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time (an AssertionError, so pytest reports it as a failed check)."""


def wait_for(
    condition: Callable[[], T],
    timeout: float,
    *,
    what: str = "the condition",
    interval: float = 0.02,
    ignoring: tuple[type[BaseException], ...] = (),
    state: Callable[[], object] | None = None,
) -> T:
    """Call ``condition`` until it returns something truthy and return that; raise ``WaitTimeout`` after ``timeout`` s.

    ``ignoring`` names exceptions that mean "not yet" (the last one is chained to the timeout);
    ``state`` is asked for what to show when time runs out (the last status, a log).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
        except ignoring as exc:
            last_error = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            detail = f": {state()}" if state is not None else ""
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}{detail}") from last_error
        time.sleep(interval)
