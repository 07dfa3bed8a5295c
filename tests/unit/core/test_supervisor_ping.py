"""``supervisor.answers_ping``: the readiness probe `up` writes on a socket instead of using urllib."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from neurondock_platform.supervisor import answers_ping


@contextmanager
def _server(host: str, status: int) -> Iterator[tuple[int, list[str]]]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family})
    server = server_class((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_200_on_ping_is_ready():
    with _server("127.0.0.1", 200) as (port, seen):
        assert answers_ping("127.0.0.1", port)
    assert seen == ["/ping"]


def test_a_wildcard_bind_is_asked_on_loopback():
    with _server("0.0.0.0", 200) as (port, _):
        assert answers_ping("0.0.0.0", port)


def test_another_status_is_not_ready():
    with _server("127.0.0.1", 503) as (port, _):
        assert not answers_ping("127.0.0.1", port)


def test_nothing_listening_is_not_ready():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        assert not answers_ping("127.0.0.1", port)
