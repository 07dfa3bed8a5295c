"""The one wrapper around every call into a replica process (tests swap it for a fake).

A streaming call hands each chunk frame to ``on_chunk`` as it arrives (``protocol.py``); the model
timeout then bounds the wait for each part, not the whole stream.

Request frames leave at the end of the event loop's pass (``Outbox``), all of that pass's together: a
replica woken by the first then finds the others already readable and runs them as one batch
(docs/runtime.md, "Batching"), where frames written one by one as each request was ready woke it
for each alone (docs/measured.md, "Server CPU per answer: request frames leave together").
"""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from neurondock_platform.dataplane.protocol import (
    HANDSHAKE_SECONDS,
    KIND_CHUNK,
    ClientHandshake,
    Frame,
    FrameChannel,
    ProtocolError,
    detect_dead_peer,
    frame_buffers,
    local_name,
)

# Receives one streamed part: the chunk frame's meta and the part's bytes.
OnChunk = Callable[[dict[str, Any], bytes], Awaitable[None]]


class ReplicaUnavailable(Exception):
    """The replica could not be reached or died mid-request: safe to retry elsewhere."""


class ReplicaTimeout(Exception):
    """The replica took longer than the model timeout."""


class StreamInterrupted(Exception):
    """The replica was lost after parts of a stream went out: the request cannot be sent elsewhere."""


class ReplicaCaller(Protocol):
    """What the router needs from a replica client."""

    async def call(
        self,
        address: str,
        meta: dict[str, Any],
        body: bytes,
        timeout: float,
        *,
        key: str,
        on_chunk: OnChunk | None = None,
    ) -> tuple[dict[str, Any], bytes]: ...

    def abandon(self, address: str, key: str) -> None: ...

    async def close(self) -> None: ...


class _Connection(FrameChannel):
    """One connection to a replica process, with what the client notes about its request in flight.

    The request in flight has a deadline (``start_deadline``) that fails its wait with TimeoutError.
    One timer per connection serves all of them: when it fires it fails the wait only if the request
    then in flight is past its own deadline, and otherwise waits again until that deadline, so a timer
    is armed about once per timeout, not made and cancelled for every request (~2 µs a request,
    docs/measured.md, "The API's request path, leaner").
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.abandoned = False
        # Streamed parts handed on for the request in flight.
        self.parts = 0
        # When the request in flight times out (loop time); None with none in flight.
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start_deadline(self, timeout: float) -> None:
        """The request about to be written fails its wait ``timeout`` seconds from now."""
        self._deadline = self.loop.time() + timeout
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._check_deadline)

    def end_deadline(self) -> None:
        """The request in flight is over (answered or failed)."""
        self._deadline = None

    def _check_deadline(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return  # nothing in flight: the next request arms the timer
        if self.loop.time() >= deadline:
            self.expire()
        else:
            self._timer = self.loop.call_at(deadline, self._check_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Outbox:
    """Request frames held until the end of the event loop's pass, then written in the order they came."""

    def __init__(self) -> None:
        # The frames of the pass in progress; each pass's flush gets its own list.
        self._frames: list[tuple[FrameChannel, tuple[bytes, ...]]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def send(self, conn: FrameChannel, meta: dict[str, Any], body: bytes) -> None:
        """Encode a frame now (its errors are the caller's) and write it when the loop's pass ends."""
        buffers = frame_buffers(meta, body)
        frames = self._frames
        if frames is None or self._loop is not conn.loop:
            frames = self._frames = []
            self._loop = conn.loop
            conn.loop.call_soon(self._flush, frames)
        frames.append((conn, buffers))

    def _flush(self, frames: list[tuple[FrameChannel, tuple[bytes, ...]]]) -> None:
        if self._frames is frames:
            self._frames = None
        for conn, buffers in frames:
            # Closed meanwhile (its caller was cancelled, or the replica went away): its wait has failed
            # or fails when the connection's loss is reported; nothing is written to it.
            if not conn.is_closing():
                conn.write_buffers(buffers)


# Connections are pooled per replica process: the address and that process's key.
_Target = tuple[str, str]


class ReplicaClient:
    """Keep-alive, authenticated connections per replica process; one request per connection at a time.

    Each new connection runs the protocol's handshake on the replica's key (one extra round trip);
    requests then reuse it, so the steady state costs nothing more than before.
    """

    def __init__(self, max_idle_per_replica: int = 16) -> None:
        self._idle: dict[_Target, list[_Connection]] = defaultdict(list)
        # Connections with a request in flight, so a hung replica's can all be given up at once.
        self._busy: dict[_Target, set[_Connection]] = defaultdict(set)
        self._max_idle = max_idle_per_replica
        self._outbox = Outbox()

    async def _open(self, loop: asyncio.AbstractEventLoop, address: str, key: str) -> _Connection:
        """Connect on the replica's Unix socket when it is on this host, else on TCP at ``address``."""
        local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        local.setblocking(False)
        try:
            local.connect(local_name(key))
        except OSError:
            # No such name in this network namespace (a replica on another host, or one started
            # without an agent), or its backlog is full: TCP reaches it all the same.
            local.close()
        else:
            _, conn = await loop.create_unix_connection(lambda: _Connection(loop), sock=local)
            return conn
        host, _, port = address.rpartition(":")
        connecting = loop.create_connection(lambda: _Connection(loop), host, int(port))
        _, conn = await asyncio.wait_for(connecting, HANDSHAKE_SECONDS)
        sock = conn.transport.get_extra_info("socket") if conn.transport is not None else None
        if sock is not None:
            try:
                # http.client-style split writes plus Nagle cost ~40 ms per call (docs/measured.md).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                detect_dead_peer(sock)
            except BaseException:
                conn.close()
                raise
        return conn

    async def _connect(self, address: str, key: str) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            conn = await self._open(loop, address, key)
            try:
                async with asyncio.timeout(HANDSHAKE_SECONDS):
                    shake = ClientHandshake(key)
                    hello, _ = await conn.next_frame()
                    conn.write(shake.auth(hello))
                    answer, _ = await conn.next_frame()
                    shake.check(answer)
            except BaseException:
                conn.close()
                raise
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolError, ValueError) as exc:
            # A replica that is gone, or a process on its old port that cannot prove its key: both
            # mean "not this replica any more"; the router drops it and tries another.
            raise ReplicaUnavailable(f"cannot connect to replica at {address}: {exc!r}") from exc
        return conn

    async def _exchange(
        self, conn: _Connection, meta: dict[str, Any], body: bytes, timeout: float, on_chunk: OnChunk | None = None
    ) -> Frame:
        conn.parts = 0
        if on_chunk is None:
            # One answer frame: the connection's deadline fails the wait, cheaper than a timeout context.
            conn.start_deadline(timeout)
            try:
                self._outbox.send(conn, meta, body)
                return await conn.next_frame()
            finally:
                conn.end_deadline()
        async with asyncio.timeout(timeout) as deadline_cm:
            self._outbox.send(conn, meta, body)
            answer, answer_body = await conn.next_frame()
            while answer.get("kind") == KIND_CHUNK:
                conn.parts += 1
                await on_chunk(answer, answer_body)
                # A stream that keeps producing is not hung: each part gets the whole timeout.
                deadline_cm.reschedule(asyncio.get_running_loop().time() + timeout)
                answer, answer_body = await conn.next_frame()
            return answer, answer_body

    async def call(
        self,
        address: str,
        meta: dict[str, Any],
        body: bytes,
        timeout: float,
        *,
        key: str,
        on_chunk: OnChunk | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """Send one request frame to the replica holding ``key`` and wait for its answer.

        Raises:
            ReplicaUnavailable: the replica is gone and nothing of the answer went out (retry elsewhere).
            StreamInterrupted: the replica was lost after ``on_chunk`` had parts.
            ReplicaTimeout: no answer, or no next part, within ``timeout``.
        """
        target = (address, key)
        idle = self._idle[target]
        while idle and not idle[-1].usable:
            idle.pop().close()  # closed by the replica while idle: no request is written to it
        reused = bool(idle)
        conn = idle.pop() if idle else await self._connect(address, key)
        busy = self._busy[target]
        busy.add(conn)
        try:
            answer = await self._exchange(conn, meta, body, timeout, on_chunk)
        except TimeoutError as exc:
            conn.close()
            raise ReplicaTimeout(f"replica at {address} did not answer within {timeout:.0f} s") from exc
        except (OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
            conn.close()
            if conn.parts:
                raise StreamInterrupted(f"replica at {address} went away after {conn.parts} part(s)") from exc
            if conn.abandoned:
                raise ReplicaUnavailable(f"replica at {address} hung; the request goes to another replica") from exc
            if reused:
                # An idle keep-alive connection may have been closed by a restarted replica:
                # one fresh attempt tells a stale socket from a dead replica.
                return await self._fresh_call(target, meta, body, timeout, on_chunk)
            raise ReplicaUnavailable(f"replica at {address} went away mid-request: {exc!r}") from exc
        except BaseException:
            # on_chunk failed (the caller went away) or the task was cancelled: the replica may still
            # be writing this answer, so the connection cannot carry another request.
            conn.close()
            raise
        finally:
            busy.discard(conn)
        if len(idle) < self._max_idle:
            idle.append(conn)
        else:
            conn.close()
        return answer

    async def _fresh_call(
        self, target: _Target, meta: dict[str, Any], body: bytes, timeout: float, on_chunk: OnChunk | None
    ) -> tuple[dict[str, Any], bytes]:
        address = target[0]
        for conn in self._idle.pop(target, []):
            conn.close()
        conn = await self._connect(*target)
        busy = self._busy[target]
        busy.add(conn)
        try:
            answer = await self._exchange(conn, meta, body, timeout, on_chunk)
        except TimeoutError as exc:
            conn.close()
            raise ReplicaTimeout(f"replica at {address} did not answer within {timeout:.0f} s") from exc
        except (OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
            conn.close()
            if conn.parts:
                raise StreamInterrupted(f"replica at {address} went away after {conn.parts} part(s)") from exc
            raise ReplicaUnavailable(f"replica at {address} went away mid-request: {exc!r}") from exc
        except BaseException:
            conn.close()
            raise
        finally:
            busy.discard(conn)
        self._idle[target].append(conn)
        return answer

    def abandon(self, address: str, key: str) -> None:
        """Give up every request in flight to one replica process (it hung): they fail as unavailable.

        Requests queued behind a hung execution never ran; failing them as ``ReplicaUnavailable``
        sends them to another replica now instead of letting each wait out its own timeout.
        """
        target = (address, key)
        for conn in self._busy.pop(target, set()):
            conn.abandoned = True
            conn.close()
        for conn in self._idle.pop(target, []):
            conn.close()

    async def close(self) -> None:
        """Close every idle connection."""
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
