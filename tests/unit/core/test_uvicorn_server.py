"""The API's uvicorn server wakes once a second when idle and still stops at once when told to."""

from __future__ import annotations

import signal
import threading
import time
import urllib.request

import uvicorn
from tests.support.waiting import wait_for

from neurondock_platform.uvicorn_server import TICK_SECONDS, QuietServer


async def hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hi"})


def test_an_idle_server_ticks_once_a_second_serves_with_a_date_and_stops_when_signalled():
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
    port = server.servers[0].sockets[0].getsockname()[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
        assert resp.read() == b"hi" and resp.headers["Date"]
    seen, started = len(ticks), time.monotonic()
    wait_for(lambda: len(ticks) >= seen + 2, 10, what="two more ticks")
    # uvicorn's own loop ticks every 0.1 s; a busy machine can only make ticks later, never sooner.
    assert time.monotonic() - started >= 2 * TICK_SECONDS - 0.5
    server.handle_exit(signal.SIGTERM, None)  # as its signal handler would; the loop wakes at once
    runner.join(10)
    assert not runner.is_alive()
