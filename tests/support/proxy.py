"""A small HTTP proxy on loopback for tests (CONNECT tunnels, absolute-URI forwarding), and a TLS front.

Both record nothing but what the proxy was asked; both stop when their ``with`` block ends, and a
connection idle for ``IDLE`` seconds ends by itself.
"""

from __future__ import annotations

import base64
import contextlib
import select
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

IDLE = 20.0
_HEAD_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Passed:
    """One request the proxy was sent: its method, its target as sent, its headers (names lowercased)."""

    method: str
    target: str
    headers: dict[str, str]


@dataclass
class ProxyServer:
    """A listening proxy: its URL (``user:password@`` in it when it asks for them) and what it was asked."""

    url: str
    passed: list[Passed] = field(default_factory=list)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The request's head up to its blank line, and whatever arrived after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk or len(data) > _HEAD_LIMIT:
            raise ConnectionError("the request's head did not arrive")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways, in this one thread (an SSL socket is not shared between threads), until either ends."""
    sockets = [a, b]
    while True:
        ready = [s for s in sockets if isinstance(s, ssl.SSLSocket) and s.pending()]
        if not ready:
            ready = select.select(sockets, [], [], IDLE)[0]
        if not ready:
            return
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            (b if sock is a else a).sendall(data)


@contextmanager
def _serving(handle: Any) -> Iterator[int]:
    """A threaded server on 127.0.0.1 calling ``handle(connection)`` per connection; yields its port."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.settimeout(IDLE)
            with contextlib.suppress(OSError):  # a client that went away: nothing more to do
                handle(self.request)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def forwarding_proxy(*, credentials: tuple[str, str] | None = None) -> Iterator[ProxyServer]:
    """An HTTP proxy: CONNECT opens a tunnel, an absolute URI is forwarded with its path.

    With ``credentials`` it answers 407 to a request without them (its URL then carries them).
    """
    lock = threading.Lock()
    wanted = None
    if credentials is not None:
        wanted = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()

    def handle(client: socket.socket) -> None:
        head, rest = _read_head(client)
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        with lock:
            proxy.passed.append(Passed(method, target, headers))
        if wanted is not None and headers.get("proxy-authorization") != wanted:
            client.sendall(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="tests"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
            )
            return
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=IDLE) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _pump(client, upstream)
            return
        url = urlsplit(target)
        assert url.scheme == "http" and url.hostname, f"not an absolute http URI: {target}"
        path = url.path + (f"?{url.query}" if url.query else "")
        forwarded = [f"{method} {path} HTTP/1.1"]
        forwarded += [
            line for line in lines if not line.lower().startswith(("proxy-authorization:", "proxy-connection:"))
        ]
        with socket.create_connection((url.hostname, url.port or 80), timeout=IDLE) as upstream:
            upstream.sendall(("\r\n".join(forwarded) + "\r\n\r\n").encode("latin-1") + rest)
            _pump(client, upstream)

    with _serving(handle) as port:
        userinfo = f"{quote(credentials[0], safe='')}:{quote(credentials[1], safe='')}@" if credentials else ""
        proxy = ProxyServer(f"http://{userinfo}127.0.0.1:{port}")
        yield proxy


@contextmanager
def tls_front(upstream_port: int, context: ssl.SSLContext) -> Iterator[int]:
    """TLS on 127.0.0.1 (``context``'s certificate) in front of a plain server's port; yields the TLS port."""

    def handle(client: socket.socket) -> None:
        with (
            context.wrap_socket(client, server_side=True) as tls,
            socket.create_connection(("127.0.0.1", upstream_port), timeout=IDLE) as upstream,
        ):
            _pump(tls, upstream)

    with _serving(handle) as port:
        yield port
