"""uvicorn as the API runs it: a main loop that sleeps while no connection is open, and one send per response.

``QuietServer`` ticks once a second with a connection open instead of ten times a second.
``OneSendProtocol`` holds a connection's writes until the end of the event loop's pass: uvicorn
writes a response's head and its body separately, and uvloop sends each at once, two system calls
(and two wake-ups of the client) per answer where one does (docs/measured.md, "Server CPU per
answer: one send per response, and the replica channel on a Unix socket").
``DirectProtocol`` serves the plainest requests of the paths an app names without uvicorn's
request-response cycle (docs/measured.md, "The API's request path beside uvicorn's cycle").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from types import FrameType
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE, HttpToolsProtocol

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

    def write_whole(self, data: bytes) -> None:
        """Write a whole response at once (after what is held: then at the end of the pass, with it)."""
        if self._held is None:
            self._transport.write(data)
        else:
            self.write(data)

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


# The largest body a direct request may declare: one that arrives with its head or just after it, so
# that waiting for all of it before the app starts changes nothing a client can see (a 413, or a
# refusal before the body is read, matters for the large bodies that go through uvicorn's cycle).
DIRECT_BODY_LIMIT = 64 * 1024
_INTERNAL_ERROR = (
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)

log = logging.getLogger(__name__)
ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class DirectCycle:
    """One request served beside uvicorn's cycle: its whole body in one message, its response in one write.

    It stands where uvicorn's ``RequestResponseCycle`` stands on the protocol (``cycle``,
    ``response_complete``, ``keep_alive``), so pipelining and shutdown treat it as they treat uvicorn's.
    The app sees an ASGI scope with the request's own keys, a ``receive`` that returns the body once
    and a disconnect after it, and a ``send`` that needs a content-length.
    """

    __slots__ = ("app", "body", "head", "keep_alive", "left", "protocol", "response_complete", "scope")

    def __init__(self, protocol: DirectProtocol, app: ASGIApp, scope: dict[str, Any]) -> None:
        self.protocol = protocol
        self.app = app
        self.scope = scope
        self.body: bytes | bytearray = b""
        self.keep_alive = True
        self.response_complete = False
        self.head: bytes | None = None  # the response's head until it is written
        self.left = -1  # the response's bytes still to come; -1 before its start

    async def run(self) -> None:
        """Serve the request; a failure is uvicorn's 500 or a closed connection."""
        try:
            await self.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            log.error("Exception in ASGI application", exc_info=exc)
            self._fail()
        else:
            if not self.response_complete:
                log.error("ASGI callable returned without completing response.")
                self._fail()

    def _fail(self) -> None:
        transport = self.protocol.transport
        if self.left < 0 or self.head is not None:  # nothing written yet
            transport.write(STATUS_LINE[500] + _INTERNAL_ERROR)
        self.response_complete = True
        transport.close()

    async def receive(self) -> dict[str, Any]:
        """The whole body, then a disconnect (as uvicorn's once a response is complete)."""
        if self.response_complete or self.body is None:
            return {"type": "http.disconnect"}
        body, self.body = self.body, None  # type: ignore[assignment]
        return {"type": "http.request", "body": body if type(body) is bytes else bytes(body), "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        """Hold the response's start; write it with the body (one write for a one-message body)."""
        if self.response_complete:
            raise RuntimeError(f"Unexpected ASGI message '{message['type']}' sent, after response already completed.")
        if self.left < 0:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{message['type']}'.")
            self._start(message["status"], message.get("headers", ()))
            return
        if message["type"] != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{message['type']}'.")
        body = message.get("body", b"")
        self.left -= len(body)
        if self.left < 0:
            raise RuntimeError("Response content longer than Content-Length")
        more = message.get("more_body", False)
        if not more and self.left:
            raise RuntimeError("Response content shorter than Content-Length")
        transport = self.protocol.transport
        if not transport.is_closing():  # the client went away: what it would have read is dropped
            head, self.head = self.head, None
            if head is None:
                transport.write(body)
            elif more:
                transport.write(head + body)
            else:
                transport.write_whole(head + body)  # type: ignore[attr-defined]  # nothing to wait for: it leaves at once, in one send
        if not more:
            self.response_complete = True
            if not self.keep_alive:
                transport.close()
            self.protocol.on_response_complete()

    def _start(self, status: int, headers: Any) -> None:
        lines = [STATUS_LINE[status]]
        length = -1
        for name, value in (*self.protocol.server_state.default_headers, *headers):
            name = name.lower()
            if name == b"content-length":
                length = int(value)
            elif name in (b"transfer-encoding", b"connection"):
                raise RuntimeError(f"A direct response does not set {name.decode()}.")
            lines += (name, b": ", value, b"\r\n")
        # uvicorn's own checks (a value from a model must not start a header of its own), on all names
        # (joined by a character a name may hold) and all values at once.
        if HEADER_RE.search(b"-".join(lines[1::4])):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(b"\t".join(lines[3::4])):
            raise RuntimeError("Invalid HTTP header value.")
        if length < 0:
            raise RuntimeError("A direct response needs a content-length.")
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        self.head = b"".join(lines)
        self.left = length


class DirectProtocol(OneSendProtocol):
    """``OneSendProtocol`` serving the plainest requests of some paths with a ``DirectCycle``.

    The app names them: ``app.direct(path)`` returns the ASGI app to serve a POST to ``path``, or None.
    A request is served directly only when it is a keep-alive HTTP/1.1 POST to such a path, with a
    content-length of at most ``DIRECT_BODY_LIMIT``, no ``Expect``, no percent-escape in its path, and no other
    request of the connection in progress; everything else goes through uvicorn's cycle as before.
    What that skips per request: uvicorn's scope (with a copy of the app state), its cycle object and
    event, the task's wrapper coroutine, and two regular expressions per header answered.
    """

    _reading: DirectCycle | None = None  # the direct request whose body is arriving
    _direct: Callable[[str], ASGIApp | None] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.limit_concurrency is None and not self.root_path:
            self._direct = getattr(self.app, "direct", None)

    def on_message_begin(self) -> None:
        # uvicorn's scope is built in on_headers_complete, for a request that goes through its cycle.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._reading = None

    def on_headers_complete(self) -> None:
        parsed = self._parse_direct()
        path = "" if parsed is None else parsed.path.decode("ascii")
        app = None if parsed is None else self._direct(path)  # type: ignore[misc]
        if app is None:
            headers, url, expect = self.headers, self.url, self.expect_100_continue
            super().on_message_begin()
            self.headers.extend(headers)
            self.url, self.expect_100_continue = url, expect
            super().on_headers_complete()
            return
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "POST",
            "path": path,
            "query_string": parsed.query or b"",
            "headers": self.headers,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
        }
        self.cycle = self._reading = DirectCycle(self, app, scope)  # type: ignore[assignment]

    def _parse_direct(self) -> Any:
        """The parsed URL of a request plain enough to be served directly, or None."""
        if self._direct is None or self.expect_100_continue or self.parser.get_method() != b"POST":
            return None
        if self.parser.get_http_version() != "1.1" or not self.parser.should_keep_alive():
            return None
        if self.pipeline or not (self.cycle is None or self.cycle.response_complete):
            return None
        length = -1
        for name, value in self.headers:
            if name == b"content-length":
                if length >= 0 or not value.isdigit():
                    return None
                length = int(value)
            elif name in (b"transfer-encoding", b"expect", b"upgrade"):
                return None
        if not 0 <= length <= DIRECT_BODY_LIMIT:
            return None
        parsed = httptools.parse_url(self.url)
        return None if b"%" in parsed.path else parsed  # an escaped path is uvicorn's to unquote

    def on_body(self, body: bytes) -> None:
        reading = self._reading
        if reading is None:
            super().on_body(body)
        elif not reading.body:
            reading.body = body
        elif isinstance(reading.body, bytes):
            reading.body = bytearray(reading.body) + body
        else:
            reading.body += body

    def on_message_complete(self) -> None:
        reading = self._reading
        if reading is None:
            super().on_message_complete()
            return
        self._reading = None
        task = self.loop.create_task(reading.run())
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(self.cycle, DirectCycle):
            # uvicorn's would tell its cycle; a direct one finds the transport closing when it answers.
            self.cycle = None
        super().connection_lost(exc)
