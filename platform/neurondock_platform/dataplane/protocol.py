"""The length-prefixed frame protocol between the router and replica processes.

A frame is ``>II`` (meta length, body length), then ``meta`` as UTF-8 JSON, then the raw body.
Bodies never pass through JSON: NPY and raw bytes stay binary end to end (serving-peers.md §2.3,
measured-here.md: a JSON tensor costs far more than the whole hop).

Requests carry ``{"op": "invoke"|"ping"|"metadata", "content_type", "accept", "custom_attributes",
"inference_id", "target_variant", "outstanding"}`` (``outstanding``: how many requests the sending router
has in flight to that replica, this one included); responses carry ``{"status": int, "content_type",
"custom_attributes", "message", "model_latency_us"}`` plus the batching and queue figures listed in
``neurondock_workers.hosting.replica``. Status 429 means the replica's queue was full and the request
was never queued (safe to send elsewhere). A connection carries one request at a time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

HEADER = struct.Struct(">II")
MAX_META = 64 * 1024
# Larger than the 6 MiB request cap so a model may answer with a bigger body.
MAX_BODY = 64 * 1024 * 1024

OP_INVOKE = "invoke"
OP_PING = "ping"
OP_METADATA = "metadata"


class ProtocolError(Exception):
    """The peer sent something that is not a frame."""


_encode_meta = json.JSONEncoder(separators=(",", ":")).encode


def encode_frame(meta: dict[str, Any], body: bytes = b"") -> bytes:
    """Encode one frame (one buffer, so it leaves in one send)."""
    meta_bytes = _encode_meta(meta).encode()
    return b"".join((HEADER.pack(len(meta_bytes), len(body)), meta_bytes, body))


def _check(meta_len: int, body_len: int) -> None:
    if meta_len > MAX_META or body_len > MAX_BODY:
        raise ProtocolError(f"frame too large: meta={meta_len} body={body_len}")


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    """Read one frame from an asyncio stream; raises IncompleteReadError at EOF."""
    header = await reader.readexactly(HEADER.size)
    meta_len, body_len = HEADER.unpack(header)
    _check(meta_len, body_len)
    meta = json.loads(await reader.readexactly(meta_len)) if meta_len else {}
    body = await reader.readexactly(body_len) if body_len else b""
    return meta, body


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
    _check(meta_len, body_len)
    meta = json.loads(_recv_exactly(sock, meta_len)) if meta_len else {}
    body = _recv_exactly(sock, body_len) if body_len else b""
    return meta, body


def send_frame(sock: socket.socket, meta: dict[str, Any], body: bytes = b"") -> None:
    """Write one frame to a blocking socket."""
    sock.sendall(encode_frame(meta, body))


def ping(address: str, timeout: float = 2.0) -> dict[str, Any]:
    """Send one ping to a replica at ``host:port`` and return its answer's meta."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send_frame(sock, {"op": OP_PING})
        meta, _ = recv_frame(sock)
        return meta
