"""uvicorn as the API runs it: a main loop that sleeps while no connection is open, and one send per response.

``QuietServer`` ticks once a second with a connection open instead of ten times a second.
``OneSendProtocol`` holds a connection's writes until the end of the event loop's pass: uvicorn
writes a response's head and its body separately, and uvloop sends each at once, two system calls
(and two wake-ups of the client) per answer where one does (docs/measured.md, "Server CPU per
answer: one send per response, and the replica channel on a Unix socket").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from email.utils import formatdate
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# While a connection is open the loop ticks this often; uvicorn refreshes its Date header on every
# tenth tick, which is every tick here.
TICK_SECONDS = 1.0
_DATE_TICK = 0


class _Connections(set[Any]):
    """uvicorn's set of open connections, calling ``on_first`` when the first one opens."""

    def __init__(self, on_first: Callable[[], None]) -> None:
        super().__init__()
        self._on_first = on_first

    def add(self, item: Any) -> None:
        """Add a connection; the first after none were open calls ``on_first``."""
        first = not self
        super().add(item)
        if first:
            self._on_first()


class QuietServer(uvicorn.Server):
    """A uvicorn Server whose main loop ticks once a second while a connection is open, not at all otherwise.

    uvicorn's own loop sleeps 0.1 s between ticks only to notice ``should_exit`` and refreshes its
    Date header every tenth: ten wake-ups a second on an idle API (docs/measured.md, idle CPU). Here a
    shutdown signal sets an event the loop waits on; the Date header matters only to a response, so
    with no connection open the loop waits for that event alone, and the first connection refreshes
    the header (before its request is read) and wakes the loop to tick again.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._dated = 0.0
        # Protocols keep a reference to this set from their creation on: replaced before any exists.
        self.server_state.connections = _Connections(self._first_connection)

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick (Date header, exit checks), remembering when the header was set."""
        self._dated = time.monotonic()
        return await super().on_tick(counter)

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        while not await self.on_tick(_DATE_TICK):
            timeout = TICK_SECONDS if self.server_state.connections else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    def _first_connection(self) -> None:
        # On the loop's thread, from a protocol's connection_made: its request is read after this.
        if time.monotonic() - self._dated >= TICK_SECONDS:
            self._dated = time.monotonic()
            date = [(b"date", formatdate(time.time(), usegmt=True).encode())] if self.config.date_header else []
            self.server_state.default_headers = date + self.config.encoded_headers
        if self._wake is not None:
            self._wake.set()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)


# A write this large leaves at once (with what is held before it): holding it saves nothing.
SEND_AT_ONCE = 64 * 1024


class PassWriter:
    """A transport whose writes leave together at the end of the event loop's pass, in one send.

    Everything but ``write`` and ``close`` is the wrapped transport's own.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        """Write ``data`` when the loop's pass ends (at once when it is large)."""
        held = self._held
        if held is None:
            if len(data) >= SEND_AT_ONCE:
                self._transport.write(data)
                return
            self._held = [data]
            self._loop.call_soon(self.flush)
            return
        held.append(data)
        if len(data) >= SEND_AT_ONCE:
            self.flush()

    def flush(self) -> None:
        """Hand what is held to the transport, in one write."""
        held, self._held = self._held, None
        if not held or self._transport.is_closing():
            return  # nothing held, or the connection is gone and its bytes with it
        if len(held) == 1:
            self._transport.write(held[0])
        else:
            self._transport.writelines(held)

    def close(self) -> None:
        """Send what is held, then close (as a transport sends its buffer before it closes)."""
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneSendProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a ``PassWriter``: a response's head and body in one send."""

    # When the last response left, while no request is in progress; None while one is.
    _idle_since: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Flow control, addresses and TLS checks stay on the transport; the response cycle writes through this.
        self.transport = PassWriter(transport, self.loop)  # type: ignore[assignment]

    # The keep-alive timeout without a timer per request. uvicorn cancels the connection's timer when
    # bytes arrive and arms a new one after each response: a TimerHandle made, pushed onto the loop's
    # heap and cancelled for every request (~2 µs). Here the one timer stays armed; when it fires it
    # closes the connection only if it has been idle for the whole timeout since the last response,
    # and otherwise waits again from that response (docs/measured.md, "The API's request path, leaner").

    def _unset_keepalive_if_required(self) -> None:
        # Bytes arrived: the connection is not idle (the timer finds that out when it fires).
        self._idle_since = None

    def on_response_complete(self) -> None:
        # uvicorn's, but arming the keep-alive timer only when none is armed.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            self._idle_since = None
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self._arm_keep_alive(self._idle_since + self.timeout_keep_alive)

    def _arm_keep_alive(self, when: float) -> None:
        self.timeout_keep_alive_task = self.loop.call_at(when, self.timeout_keep_alive_handler)

    def timeout_keep_alive_handler(self) -> None:
        self.timeout_keep_alive_task = None
        if self._idle_since is None:
            return  # a request is in progress: its response arms the timer again
        due = self._idle_since + self.timeout_keep_alive
        if self.loop.time() < due:
            self._arm_keep_alive(due)  # answered again since the timer was armed
            return
        super().timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
