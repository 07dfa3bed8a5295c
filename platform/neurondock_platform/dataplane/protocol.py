"""The length-prefixed frame protocol between the router and replica processes.

A frame is ``>II`` (meta length, body length), then ``meta`` as UTF-8 JSON, then the raw body.
Bodies never pass through JSON: NPY and raw bytes stay binary end to end (docs/measured.md,
"Tensors as JSON": a JSON tensor costs far more than the whole hop).

Requests carry ``{"op": "invoke"|"ping"|"metadata", "content_type", "accept", "custom_attributes",
"inference_id", "target_variant", "outstanding", "following"}`` (``outstanding``: how many requests the
sending router has in flight to that replica, this one included; ``following``, when not 0: that
replica's share of the requests from the same caller for the endpoint that the router's API is still
reading, docs/runtime.md "Batching"); responses carry ``{"status": int, "content_type",
"custom_attributes", "message", "model_latency_us"}`` (``custom_attributes`` and ``message`` only when
they are set) plus the batching and queue figures listed in
``neurondock_workers.hosting.replica``. Status 429 means the replica's queue was full and the request
was never queued (safe to send elsewhere). A connection carries one request at a time.

Streaming (``docs/streaming.md``): a request with ``"stream": true`` may be answered by several
frames. Each part the model produces comes as soon as it exists in a chunk frame, meta
``{"kind": "chunk", "content_type", "custom_attributes"}`` and the part as its body; the last frame is
the ordinary answer frame (no ``kind``). After chunk frames its body is empty, and a status other than
200 says the stream broke after its first part. With no chunk frame before it, it is an ordinary
answer: the whole response as one part (a model that does not stream, or a failure before the first
part). Every other request gets exactly one frame back.

Every connection starts with a mutual handshake on the replica's own key (``new_key``: 32 random
bytes the host agent makes for each replica process, hands to that process at spawn and records on
its ``Replica`` row for the routers). The replica speaks first with ``{"op": "hello", "nonce": Ns}``;
the caller answers ``{"op": "auth", "nonce": Nc, "proof": HMAC(key, client|Ns|Nc)}``; the replica
checks it and answers ``{"status": 200, "proof": HMAC(key, replica|Ns|Nc)}``, which the caller checks
in turn. A wrong or missing proof gets ``{"status": 403}`` and the connection closes, so a frame
from anyone who does not hold that replica's key is never read as a request; and a process that
took over a dead replica's port cannot pose as it, because it cannot prove the key either. Fresh
nonces on both sides make a recorded handshake useless. The key lets its holder talk to one replica
process only: the model code inside that process can read it, and it opens nothing else.
(Authentication only, no encryption: across hosts, keep the replica network private — see
``docs/sandbox.md``.)

A replica started by a host agent also listens on an abstract Unix socket named from its key
(``local_name``), and a router in the same network namespace — the same host — connects there
before it tries TCP: the same frames and handshake for fewer microseconds of kernel time a frame
(docs/sandbox.md, "The replica channel"). Abstract names live in their network namespace, so a
router on another host (or in another namespace) finds none and uses TCP; and the name cannot be
taken first by anyone who does not hold the key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import socket
import struct
from collections import deque
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

HEADER = struct.Struct(">II")
MAX_META = 64 * 1024
# Larger than the 6 MiB request cap so a model may answer with a bigger body.
MAX_BODY = 64 * 1024 * 1024

OP_INVOKE = "invoke"
OP_PING = "ping"
OP_METADATA = "metadata"
OP_HELLO = "hello"
OP_AUTH = "auth"
# The frame kind of one streamed part (the answer frame that ends a stream has no kind).
KIND_CHUNK = "chunk"
# A peer that has not proven the key by then is dropped (it holds a connection, nothing more).
HANDSHAKE_SECONDS = 5.0
_PROOF_CONTEXT = "neurondock-replica-channel/1"


class ProtocolError(Exception):
    """The peer sent something that is not a frame."""


class ChannelAuthError(ProtocolError):
    """The peer could not prove it holds the replica's key."""


def new_key() -> str:
    """Return a fresh replica key (hex; one per replica process, never reused)."""
    return secrets.token_hex(32)


def local_name(key: str) -> str:
    """The abstract Unix socket name of the replica holding ``key`` (``\\0`` first: no file behind it)."""
    digest = hashlib.sha256(f"{_PROOF_CONTEXT}|local|{key}".encode()).hexdigest()
    return f"\0neurondock-replica-{digest[:40]}"


def _proof(key: str, role: str, server_nonce: str, client_nonce: str) -> str:
    message = f"{_PROOF_CONTEXT}|{role}|{server_nonce}|{client_nonce}".encode()
    return hmac.new(bytes.fromhex(key), message, hashlib.sha256).hexdigest()


def _nonce(meta: dict[str, Any], field: str = "nonce") -> str:
    value = meta.get(field)
    if not isinstance(value, str) or not 16 <= len(value) <= 128:
        raise ChannelAuthError(f"handshake frame without a valid {field}")
    return value


class ServerHandshake:
    """The replica's side of the handshake: a hello to send, then the caller's auth frame to check."""

    __slots__ = ("_key", "nonce")

    def __init__(self, key: str) -> None:
        self._key = key
        self.nonce = secrets.token_hex(16)

    def hello(self) -> bytes:
        """The first frame on every connection."""
        return encode_frame({"op": OP_HELLO, "nonce": self.nonce})

    def answer(self, meta: dict[str, Any]) -> bytes:
        """Check the caller's auth frame and return the frame proving the replica's side.

        Raises:
            ChannelAuthError: not an auth frame, or a proof made without this replica's key.
        """
        if meta.get("op") != OP_AUTH:
            raise ChannelAuthError(
                f"refused {str(meta.get('op'))[:32]!r} before authentication: this replica accepts frames "
                "only from the neurondock platform"
            )
        client_nonce = _nonce(meta)
        proof = meta.get("proof")
        expected = _proof(self._key, "client", self.nonce, client_nonce)
        if not isinstance(proof, str) or not hmac.compare_digest(proof, expected):
            raise ChannelAuthError("authentication failed: the proof does not match this replica's key")
        return encode_frame({"status": 200, "proof": _proof(self._key, "replica", self.nonce, client_nonce)})


def refusal(exc: ChannelAuthError) -> bytes:
    """The frame a replica sends before closing a connection that failed the handshake."""
    return encode_frame({"status": 403, "message": str(exc)})


class ClientHandshake:
    """The caller's side: answer the replica's hello, then check the replica's own proof."""

    __slots__ = ("_key", "_server_nonce", "nonce")

    def __init__(self, key: str) -> None:
        self._key = key
        self.nonce = secrets.token_hex(16)
        self._server_nonce = ""

    def auth(self, hello: dict[str, Any]) -> bytes:
        """Return the auth frame answering ``hello``."""
        if hello.get("op") != OP_HELLO:
            raise ChannelAuthError(f"expected the replica's hello, got {hello!r:.200}")
        self._server_nonce = _nonce(hello)
        proof = _proof(self._key, "client", self._server_nonce, self.nonce)
        return encode_frame({"op": OP_AUTH, "nonce": self.nonce, "proof": proof})

    def check(self, answer: dict[str, Any]) -> None:
        """Raise ChannelAuthError unless the replica proved the same key."""
        if answer.get("status") != 200:
            raise ChannelAuthError(f"the replica refused the handshake: {answer.get('message', answer)!s:.300}")
        expected = _proof(self._key, "replica", self._server_nonce, self.nonce)
        proof = answer.get("proof")
        if not isinstance(proof, str) or not hmac.compare_digest(proof, expected):
            raise ChannelAuthError("the peer could not prove the replica's key (not the replica it claims to be)")


def _meta_encoder() -> Callable[[dict[str, Any]], str]:
    """JSON for a frame's meta: the C encoder made once, without the circular-reference check.

    ``JSONEncoder.encode`` builds a new C encoder and a marker dict on every call; a meta is a flat
    dict this code builds, so neither is needed (a 290-byte answer meta: 6.8 → 5.1 µs here).
    """
    encoder = json.JSONEncoder(separators=(",", ":"), check_circular=False)
    if c_make_encoder is None:  # no _json accelerator: the pure-Python encoder
        return encoder.encode
    make = c_make_encoder(None, encoder.default, encode_basestring_ascii, None, ":", ",", False, False, True)
    return lambda meta: "".join(make(meta, 0))


_encode_meta = _meta_encoder()


def encode_frame(meta: dict[str, Any], body: bytes = b"") -> bytes:
    """Encode one frame (one buffer, so it leaves in one send)."""
    meta_bytes = _encode_meta(meta).encode()
    return b"".join((HEADER.pack(len(meta_bytes), len(body)), meta_bytes, body))


# A body this large leaves beside its frame's head, not copied into one buffer with it (602 KB, one
# 224×224 float32 image, is a copy of a few hundred microseconds here); uvloop writes both in one writev.
SPLIT_BODY = 64 * 1024


def encode_head(meta: dict[str, Any], body_len: int) -> bytes:
    """Encode a frame's head (its length header and meta): the frame is this followed by the body."""
    meta_bytes = _encode_meta(meta).encode()
    return HEADER.pack(len(meta_bytes), body_len) + meta_bytes


def frame_buffers(meta: dict[str, Any] | bytes, body: bytes = b"") -> tuple[bytes, ...]:
    """Encode one frame as the buffers one write sends: one buffer, or its head beside a large body.

    ``meta`` may come already encoded (UTF-8 JSON bytes of an object), as a replica's answer meta does.
    """
    meta_bytes = meta if isinstance(meta, bytes) else _encode_meta(meta).encode()
    head = HEADER.pack(len(meta_bytes), len(body))
    if len(body) < SPLIT_BODY:
        return (b"".join((head, meta_bytes, body)),)
    return (head + meta_bytes, body)


def check_lengths(meta_len: int, body_len: int) -> None:
    """Refuse a frame header announcing more than a frame may hold."""
    if meta_len > MAX_META or body_len > MAX_BODY:
        raise ProtocolError(f"frame too large: meta={meta_len} body={body_len}")


_decoder = json.JSONDecoder()
_decode_json, _scan_json = _decoder.decode, _decoder.scan_once  # type: ignore[attr-defined]


def decode_meta(raw: bytes | bytearray) -> dict[str, Any]:
    """Parse a frame's meta (UTF-8 JSON); ValueError when it is not."""
    text = raw.decode()
    # The scanner alone reads a meta as this protocol writes it (no whitespace around the object);
    # anything else, an error included, goes through the whole decoder, which answers as before.
    try:
        meta, end = _scan_json(text, 0)
        if end == len(text) and type(meta) is dict:
            return meta
    except StopIteration:
        pass
    decoded: dict[str, Any] = _decode_json(text)
    return decoded


Frame = tuple[dict[str, Any], bytes]
# Frames a connection holds unread before it stops reading (parts coming faster than they are taken).
_UNREAD_LIMIT = 1 << 20


class FrameChannel(asyncio.Protocol):
    """One connection of the frame protocol (either side), cutting frames from the bytes as they arrive.

    Asyncio's streams cost a ``readexactly`` coroutine per header, meta and body, and a StreamReader
    buffer; here a frame that arrives whole is parsed in ``data_received`` and handed to the one
    future its reader waits on (``next_frame``). A connection carries one request at a time, so
    frames nobody waits for yet are few; past ``_UNREAD_LIMIT`` bytes of them reading pauses.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_open: Callable[[FrameChannel], None] | None = None) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self._on_open = on_open
        self._buffer = bytearray()
        self._frames: deque[Frame] = deque()
        self._unread = 0
        self._waiter: asyncio.Future[Frame] | None = None
        # Why reading ended: raised to the reader waiting then and to any later one.
        self._error: BaseException | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        # Set by ``serve``: frames go to this callback, one at a time, instead of to ``next_frame``.
        self._on_frame: Callable[[Frame], None] | None = None
        # A frame handed to ``on_frame`` is not answered yet (``release`` says when it is).
        self._holding = False
        self._releasing = False
        self._ended: asyncio.Future[BaseException] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self._on_open is not None:
            self._on_open(self)

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return  # after a malformed frame nothing on this connection is read as a frame
        buffer = self._buffer
        view: bytes | bytearray = data
        if buffer:
            buffer += data
            view = buffer
        size, start = len(view), 0
        try:
            while size - start >= HEADER.size:
                meta_len, body_len = HEADER.unpack_from(view, start)
                check_lengths(meta_len, body_len)
                meta_end = start + HEADER.size + meta_len
                end = meta_end + body_len
                if end > size:
                    break
                meta = decode_meta(view[start + HEADER.size : meta_end]) if meta_len else {}
                self._deliver((meta, bytes(view[meta_end:end]) if body_len else b""))
                start = end
        except (ProtocolError, ValueError) as exc:
            self._end(exc)
            return
        if buffer:
            del buffer[:start]
        elif start < size:
            buffer += memoryview(data)[start:]

    def _deliver(self, frame: Frame) -> None:
        on_frame = self._on_frame
        if on_frame is not None:
            if not self._holding and not self._frames:
                self._holding = True
                on_frame(frame)
                return
        else:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                self._waiter = None
                waiter.set_result(frame)
                return
        self._frames.append(frame)
        self._unread += len(frame[1]) + 1
        if self._unread > _UNREAD_LIMIT and self.transport is not None:
            self.transport.pause_reading()

    def _unqueue(self) -> Frame:
        frame = self._frames.popleft()
        self._unread -= len(frame[1]) + 1
        if not self._frames and self.transport is not None:
            self.transport.resume_reading()
        return frame

    def serve(self, on_frame: Callable[[Frame], None]) -> asyncio.Future[BaseException]:
        """Hand each later frame to ``on_frame`` as it is parsed, one at a time; return why reading ended.

        A connection carries one request at a time: the next frame is handed over once ``release`` says
        the last one is answered. Frames parsed meanwhile wait here, as they wait for ``next_frame``.
        This costs no future and no task wake-up per frame (a replica answers most frames on the
        event loop's thread). The returned future's result is what ended reading: an
        ``IncompleteReadError`` at EOF, the ``ProtocolError`` or ``ValueError`` of a malformed frame,
        or the connection's error.
        """
        self._on_frame = on_frame
        ended = self._ended = self.loop.create_future()
        if self._error is not None:
            ended.set_result(self._error)
        self.release()
        return ended

    def release(self) -> None:
        """The frame last handed to ``on_frame`` is answered: hand over the next one if it came."""
        self._holding = False
        if self._releasing or self._on_frame is None:
            return  # called from within on_frame, under the loop below: it takes the next frame
        self._releasing = True
        try:
            while not self._holding and self._frames and self._error is None:
                self._holding = True
                self._on_frame(self._unqueue())
        finally:
            self._releasing = False

    def _end(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._error)
        ended = self._ended
        if ended is not None and not ended.done():
            ended.set_result(self._error)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            # The peer closed (or this side did): a frame left half read is as good as none.
            self._end(asyncio.IncompleteReadError(bytes(self._buffer), None))
        elif isinstance(exc, TimeoutError) and exc.errno is not None:
            # ETIMEDOUT from the kernel: the peer stopped answering (detect_dead_peer), which says
            # it is gone, not that it is slow.
            self._end(ConnectionError(f"the peer stopped answering: {exc}"))
        else:
            self._end(exc)
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_exception(ConnectionResetError("Connection lost"))

    def next_frame(self) -> asyncio.Future[Frame]:
        """The next frame (IncompleteReadError at EOF, ProtocolError or ValueError after a malformed one)."""
        waiter = self.loop.create_future()
        if self._frames:
            waiter.set_result(self._unqueue())
        elif self._error is not None:
            waiter.set_exception(self._error)
        else:
            self._waiter = waiter
        return waiter

    def expire(self) -> None:
        """Fail the wait in progress with TimeoutError (its deadline passed)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_exception(TimeoutError())

    def write(self, data: bytes) -> None:
        """Write bytes that are one or more whole frames."""
        assert self.transport is not None
        self.transport.write(data)

    def send(self, meta: dict[str, Any] | bytes, body: bytes = b"") -> None:
        """Write one frame (a large body beside its head, not copied into one buffer with it); see ``frame_buffers``."""
        self.write_buffers(frame_buffers(meta, body))

    def write_buffers(self, buffers: tuple[bytes, ...]) -> None:
        """Write what ``frame_buffers`` made of a frame."""
        assert self.transport is not None
        if len(buffers) == 1:
            self.transport.write(buffers[0])
        else:
            self.transport.writelines(buffers)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    async def drain(self) -> None:
        """Wait until the transport takes more writes; ConnectionResetError once the connection is gone."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("Connection lost")
        if self._paused:
            if self._drained is None:
                self._drained = self.loop.create_future()
            await self._drained

    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    @property
    def usable(self) -> bool:
        """Whether a request may be written: nothing ended the connection."""
        return self._error is None and not self.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-frame")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    """Read one frame from a blocking socket."""
    meta_len, body_len = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    check_lengths(meta_len, body_len)
    meta = decode_meta(_recv_exactly(sock, meta_len)) if meta_len else {}
    body = _recv_exactly(sock, body_len) if body_len else b""
    return meta, body


def send_frame(sock: socket.socket, meta: dict[str, Any], body: bytes = b"") -> None:
    """Write one frame to a blocking socket."""
    sock.sendall(encode_frame(meta, body))


# A replica whose host vanished (link lost, power off) never sends a RST: a request waiting on it would
# hang until the model timeout. Kernel keepalive probes (after 1 s idle, 1 s apart) and a bound on
# unacknowledged sends drop such a connection within DEAD_PEER_SECONDS, so the router retries the
# request on another replica (docs/scaling.md, "Losing a host"). A busy replica is unaffected: its
# kernel answers the probes.
DEAD_PEER_SECONDS = 4


def detect_dead_peer(sock: socket.socket) -> None:
    """Have the kernel drop a connection whose peer stopped answering for ``DEAD_PEER_SECONDS``."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, DEAD_PEER_SECONDS)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_PEER_SECONDS * 1000)


def connect(address: str, key: str, timeout: float = HANDSHAKE_SECONDS) -> socket.socket:
    """Connect to a replica at ``host:port`` and run the handshake (blocking).

    Raises:
        OSError: the connection failed or timed out.
        ChannelAuthError: the peer is not the replica holding ``key``.
    """
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        authenticate(sock, key)
    except BaseException:
        sock.close()
        raise
    return sock


def authenticate(sock: socket.socket, key: str) -> None:
    """Run the caller's side of the handshake on a connected blocking socket (ChannelAuthError on failure)."""
    shake = ClientHandshake(key)
    hello, _ = recv_frame(sock)
    sock.sendall(shake.auth(hello))
    answer, _ = recv_frame(sock)
    shake.check(answer)


def ping(address: str, key: str, timeout: float = 2.0) -> dict[str, Any]:
    """Send one ping to the replica at ``host:port`` holding ``key`` and return its answer's meta."""
    with connect(address, key, timeout) as sock:
        send_frame(sock, {"op": OP_PING})
        meta, _ = recv_frame(sock)
        return meta
