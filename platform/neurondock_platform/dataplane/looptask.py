"""One background coroutine on the event loop: started once, cancelled and awaited on stop.

The routing table's refresh (``routing.py``), the metrics flusher (``metrics.py``) and Data
Capture's flusher (``capture.py``) each run one for as long as their process serves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class LoopTask:
    """``body()`` run as a task on the loop that called ``start``, until ``stop``."""

    def __init__(self, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._body = body
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the task was started and not stopped since."""
        return self._task is not None

    def start(self) -> bool:
        """Start the task on the running loop; False when it already runs."""
        if self._task is not None:
            return False
        self._task = asyncio.get_running_loop().create_task(self._body())
        return True

    async def stop(self) -> bool:
        """Cancel the task and wait for it to end; False when it was not running."""
        task, self._task = self._task, None
        if task is None:
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True
