"""The one wrapper around every call into a replica process (tests swap it for a fake)."""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict
from typing import Any, Protocol

from neurondock_platform.dataplane.protocol import encode_frame, read_frame


class ReplicaUnavailable(Exception):
    """The replica could not be reached or died mid-request: safe to retry elsewhere."""


class ReplicaTimeout(Exception):
    """The replica took longer than the model timeout."""


class ReplicaCaller(Protocol):
    """What the router needs from a replica client."""

    async def call(
        self, address: str, meta: dict[str, Any], body: bytes, timeout: float
    ) -> tuple[dict[str, Any], bytes]: ...

    async def close(self) -> None: ...


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class ReplicaClient:
    """Keep-alive connections per replica address; one request per connection at a time."""

    def __init__(self, max_idle_per_replica: int = 16) -> None:
        self._idle: dict[str, list[_Connection]] = defaultdict(list)
        self._max_idle = max_idle_per_replica

    async def _connect(self, address: str) -> _Connection:
        host, _, port = address.rpartition(":")
        try:
            reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 20)
        except OSError as exc:
            raise ReplicaUnavailable(f"cannot connect to replica at {address}: {exc}") from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # http.client-style split writes plus Nagle cost ~40 ms per call (measured-here.md).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(reader, writer)

    @staticmethod
    async def _exchange(
        conn: _Connection, meta: dict[str, Any], body: bytes, timeout: float
    ) -> tuple[dict[str, Any], bytes]:
        # asyncio.timeout, not wait_for: wait_for wraps the read in a new Task on every call.
        async with asyncio.timeout(timeout):
            conn.writer.write(encode_frame(meta, body))
            if conn.writer.transport.get_write_buffer_size():
                await conn.writer.drain()
            return await read_frame(conn.reader)

    async def call(
        self, address: str, meta: dict[str, Any], body: bytes, timeout: float
    ) -> tuple[dict[str, Any], bytes]:
        """Send one request frame and wait for its answer."""
        idle = self._idle[address]
        reused = bool(idle)
        conn = idle.pop() if idle else await self._connect(address)
        try:
            answer = await self._exchange(conn, meta, body, timeout)
        except TimeoutError as exc:
            conn.close()
            raise ReplicaTimeout(f"replica at {address} did not answer within {timeout:.0f} s") from exc
        except (OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
            conn.close()
            if reused:
                # An idle keep-alive connection may have been closed by a restarted replica:
                # one fresh attempt tells a stale socket from a dead replica.
                return await self._fresh_call(address, meta, body, timeout)
            raise ReplicaUnavailable(f"replica at {address} went away mid-request: {exc!r}") from exc
        if len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn.close()
        return answer

    async def _fresh_call(
        self, address: str, meta: dict[str, Any], body: bytes, timeout: float
    ) -> tuple[dict[str, Any], bytes]:
        for conn in self._idle.pop(address, []):
            conn.close()
        conn = await self._connect(address)
        try:
            answer = await self._exchange(conn, meta, body, timeout)
        except TimeoutError as exc:
            conn.close()
            raise ReplicaTimeout(f"replica at {address} did not answer within {timeout:.0f} s") from exc
        except (OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
            conn.close()
            raise ReplicaUnavailable(f"replica at {address} went away mid-request: {exc!r}") from exc
        self._idle[address].append(conn)
        return answer

    async def close(self) -> None:
        """Close every idle connection."""
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
