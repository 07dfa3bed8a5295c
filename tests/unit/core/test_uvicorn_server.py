"""The API's uvicorn server ticks once a second with a connection open, never without one, and stops at once."""

from __future__ import annotations

import asyncio
import http.client
import signal
import socket
import threading
import time
import urllib.request
from email.utils import parsedate_to_datetime
from types import SimpleNamespace

import pytest
import uvicorn
from tests.support.waiting import wait_for

from neurondock_platform import uvicorn_server
from neurondock_platform.server import uvicorn_config
from neurondock_platform.uvicorn_server import QuietServer

# The product ticks once a second; a quarter of that shows the same cadence in a quarter of the time.
TICK = 0.25


@pytest.fixture(autouse=True)
def _short_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uvicorn_server, "TICK_SECONDS", TICK)


async def hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hi"})


def _serve() -> tuple[QuietServer, list[int], threading.Thread, int]:
    server = QuietServer(uvicorn.Config(hello, host="127.0.0.1", port=0, lifespan="off", log_level="warning"))
    ticks: list[int] = []
    on_tick = server.on_tick

    async def counting(counter: int) -> bool:
        ticks.append(counter)
        return await on_tick(counter)

    server.on_tick = counting  # type: ignore[method-assign]
    runner = threading.Thread(target=server.run, daemon=True)
    runner.start()
    wait_for(lambda: server.started, 30, what="the server to start")
    return server, ticks, runner, server.servers[0].sockets[0].getsockname()[1]


def test_a_server_with_a_connection_open_ticks_once_a_second_serves_with_a_date_and_stops_when_signalled():
    server, ticks, runner, port = _serve()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")  # kept alive: the connection stays open while the ticks are counted
    resp = conn.getresponse()
    assert resp.read() == b"hi" and resp.headers["Date"]
    seen, started = len(ticks), time.monotonic()
    # The connection's first tick may come after the answer; the two after it are a tick apart each.
    wait_for(lambda: len(ticks) >= seen + 3, 10, what="three more ticks")
    # uvicorn's own loop ticks every 0.1 s (three ticks in 0.3 s at most); a busy machine can only make
    # ticks later, never sooner.
    assert time.monotonic() - started >= 2 * TICK - 0.1
    conn.close()
    server.handle_exit(signal.SIGTERM, None)  # as its signal handler would; the loop wakes at once
    runner.join(10)
    assert not runner.is_alive()


def test_a_server_without_connections_does_not_tick_and_its_next_answer_has_a_fresh_date():
    server, ticks, runner, port = _serve()
    wait_for(lambda: not server.server_state.connections, 10, what="no connection open")
    seen = len(ticks)
    # The span in which no tick may come, not a wait for readiness; over a second, so that a Date header
    # left from the last tick would name an earlier second than the next request's.
    time.sleep(1.1)
    assert len(ticks) <= seen + 1  # the tick that saw the last connection close, at most
    asked = time.time()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
        assert resp.read() == b"hi"
        # HTTP dates have whole seconds: fresh means this second or later, not the one of the last tick.
        assert parsedate_to_datetime(resp.headers["Date"]).timestamp() >= int(asked)
    server.handle_exit(signal.SIGTERM, None)
    runner.join(10)
    assert not runner.is_alive()


class _Recording(asyncio.Transport):
    """A transport that records each call that would send bytes (``writelines`` is one writev)."""

    def __init__(self) -> None:
        super().__init__()
        self.sends: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name, default=None):
        return default

    def write(self, data) -> None:
        self.sends.append(bytes(data))

    def writelines(self, list_of_data) -> None:
        self.sends.append(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def sized(scope, receive, send):
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hi"})


def _protocol(transport: asyncio.Transport) -> asyncio.Protocol:
    config = uvicorn_config(sized, SimpleNamespace(host="127.0.0.1", port=0), lifespan="off")
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=uvicorn.server.ServerState(), app_state={})
    protocol.connection_made(transport)
    return protocol


async def _exchange(request: bytes) -> _Recording:
    """Feed one request to the API's HTTP protocol; return its transport once the response is written."""
    transport = _Recording()
    protocol = _protocol(transport)
    protocol.data_received(request)
    while protocol.cycle is None or not protocol.cycle.response_complete:
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # the end of the pass the response was sent in, where held writes leave
    return transport


def test_a_response_head_and_body_leave_in_one_send():
    sends = asyncio.run(_exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")).sends
    assert len(sends) == 1, sends
    assert sends[0].startswith(b"HTTP/1.1 200 OK\r\n") and sends[0].endswith(b"\r\n\r\nhi")


def test_a_closing_connection_sends_what_is_held_before_it_closes():
    transport = asyncio.run(_exchange(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert transport.closed
    assert b"".join(transport.sends).endswith(b"\r\n\r\nhi")


class _CountingLoop:
    """The running loop, counting the timers armed through it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.timers = 0

    def call_later(self, *args, **kwargs):
        self.timers += 1
        return self._loop.call_later(*args, **kwargs)

    def call_at(self, *args, **kwargs):
        self.timers += 1
        return self._loop.call_at(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._loop, name)


def test_a_keep_alive_connection_arms_one_timer_not_one_per_request():
    async def scenario() -> int:
        transport = _Recording()
        protocol = _protocol(transport)
        loop = protocol.loop = _CountingLoop(asyncio.get_running_loop())
        for _ in range(10):
            protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            while not protocol.cycle.response_complete:
                await asyncio.sleep(0)
        assert len(transport.sends) >= 1 and not transport.closed
        protocol.connection_lost(None)
        assert protocol.timeout_keep_alive_task is None  # nothing left armed for a closed connection
        return loop.timers

    assert asyncio.run(scenario()) == 1


def _serve_api(**overrides) -> tuple[QuietServer, threading.Thread, int]:
    """The API's own server (OneSendProtocol) on a free port, answering ``sized``."""
    server = QuietServer(uvicorn_config(sized, SimpleNamespace(host="127.0.0.1", port=0), lifespan="off", **overrides))
    runner = threading.Thread(target=server.run, daemon=True)
    runner.start()
    wait_for(lambda: server.started, 30, what="the server to start")
    return server, runner, server.servers[0].sockets[0].getsockname()[1]


def test_a_busy_keep_alive_connection_stays_open_and_an_idle_one_closes_a_timeout_after_its_last_answer():
    timeout = 0.5
    server, runner, port = _serve_api(timeout_keep_alive=timeout)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            reader = sock.makefile("rb")
            started = time.monotonic()
            # Requests a fifth of the timeout apart, for three timeouts: never idle long enough to close.
            while time.monotonic() - started < 3 * timeout:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert reader.readline().startswith(b"HTTP/1.1 200")
                while reader.readline() != b"\r\n":
                    pass
                assert reader.read(2) == b"hi"
                answered = time.monotonic()
                time.sleep(timeout / 5)  # the pace of the requests, not a wait for readiness
            assert reader.read(1) == b""  # blocks until the server closes the idle connection
            idle = time.monotonic() - answered
        assert timeout - 0.05 <= idle < timeout + 2.0, idle
    finally:
        server.handle_exit(signal.SIGTERM, None)
        runner.join(10)
