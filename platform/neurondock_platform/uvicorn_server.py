"""uvicorn's server with an idle main loop that wakes once a second instead of ten times."""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn

# uvicorn refreshes its Date header on every tenth tick, which is every tick here.
TICK_SECONDS = 1.0
_DATE_TICK = 0


class QuietServer(uvicorn.Server):
    """A uvicorn Server whose main loop sleeps a second between ticks and wakes at once on a signal.

    uvicorn's own loop sleeps 0.1 s between ticks only to notice ``should_exit``: ten wake-ups a second
    on an idle API (docs/measured.md, idle CPU). A shutdown signal sets an event the loop waits on.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        while not await self.on_tick(_DATE_TICK):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
            self._wake.clear()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)
