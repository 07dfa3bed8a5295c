"""The router's replica client against a stand-in replica on loopback: frames, deadlines and losses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from neurondock_platform.dataplane import protocol
from neurondock_platform.dataplane.client import ReplicaClient, ReplicaTimeout, ReplicaUnavailable, StreamInterrupted

KEY = "7a" * 32
# How the stand-in answers one request: given the request's meta and body and its connection.
Answer = Callable[[dict[str, Any], bytes, protocol.FrameChannel], Awaitable[None]]


async def _serve(answer: Answer, key: str = KEY) -> tuple[asyncio.Server, str]:
    async def handle(channel: protocol.FrameChannel) -> None:
        shake = protocol.ServerHandshake(key)
        channel.write(shake.hello())
        try:
            meta, _ = await channel.next_frame()
            channel.write(shake.answer(meta))
            while True:
                meta, body = await channel.next_frame()
                await answer(meta, body, channel)
        except (asyncio.IncompleteReadError, ConnectionError, protocol.ChannelAuthError):
            pass
        finally:
            channel.close()

    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def opened(channel: protocol.FrameChannel) -> None:
        tasks.add(loop.create_task(handle(channel)))

    server = await loop.create_server(lambda: protocol.FrameChannel(loop, on_open=opened), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"127.0.0.1:{port}"


def _run(answer: Answer, scenario: Callable[[ReplicaClient, str], Awaitable[Any]], key: str = KEY) -> Any:
    async def main() -> Any:
        server, address = await _serve(answer, key)
        client = ReplicaClient()
        try:
            return await scenario(client, address)
        finally:
            await client.close()
            server.close()

    return asyncio.run(main())


async def _echo_in_pieces(meta: dict[str, Any], body: bytes, writer: protocol.FrameChannel) -> None:
    # Two answers' bytes cut at every awkward place: the client must put each frame back together.
    frame = protocol.encode_frame({"status": 200, "n": meta["n"]}, body)
    for piece in (frame[:3], frame[3:10], frame[10:-1], frame[-1:]):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0)


def test_frames_that_arrive_in_pieces_and_bodies_of_every_size_come_back_whole() -> None:
    async def scenario(client: ReplicaClient, address: str) -> list[tuple[int, int]]:
        got = []
        for n, size in enumerate((0, 1, 100, 70_000, 1_500_000)):
            body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            meta, answer = await client.call(address, {"op": "invoke", "n": n}, body, 5.0, key=KEY)
            assert answer == body
            got.append((meta["n"], len(answer)))
        return got

    assert _run(_echo_in_pieces, scenario) == [(0, 0), (1, 1), (2, 100), (3, 70_000), (4, 1_500_000)]


def test_concurrent_calls_each_get_their_own_answer() -> None:
    async def echo(meta: dict[str, Any], body: bytes, writer: protocol.FrameChannel) -> None:
        writer.write(protocol.encode_frame({"status": 200, "n": meta["n"]}, body))

    async def scenario(client: ReplicaClient, address: str) -> list[int]:
        calls = [client.call(address, {"op": "invoke", "n": n}, str(n).encode(), 5.0, key=KEY) for n in range(32)]
        answers = await asyncio.gather(*calls)
        assert all(body == str(meta["n"]).encode() for meta, body in answers)
        return [meta["n"] for meta, _ in answers]

    assert _run(echo, scenario) == list(range(32))


def test_no_answer_within_the_timeout_is_a_replica_timeout_and_the_next_call_gets_its_own_answer() -> None:
    async def slow_first(meta: dict[str, Any], body: bytes, writer: protocol.FrameChannel) -> None:
        if meta["n"] == 0:
            await asyncio.sleep(0.5)
        writer.write(protocol.encode_frame({"status": 200, "n": meta["n"]}))

    async def scenario(client: ReplicaClient, address: str) -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReplicaTimeout):
            await client.call(address, {"op": "invoke", "n": 0}, b"", 0.1, key=KEY)
        waited = loop.time() - started
        # The late answer to the first call must not be taken for the second's.
        meta, _ = await client.call(address, {"op": "invoke", "n": 1}, b"", 5.0, key=KEY)
        return waited, meta["n"]

    waited, n = _run(slow_first, scenario)
    assert 0.1 <= waited < 0.4
    assert n == 1


def test_a_replica_that_closes_mid_answer_is_unavailable() -> None:
    async def half(meta: dict[str, Any], body: bytes, writer: protocol.FrameChannel) -> None:
        writer.write(protocol.encode_frame({"status": 200}, b"0123456789")[:-4])
        await writer.drain()
        writer.close()

    async def scenario(client: ReplicaClient, address: str) -> None:
        with pytest.raises(ReplicaUnavailable, match="went away mid-request"):
            await client.call(address, {"op": "invoke"}, b"", 5.0, key=KEY)

    _run(half, scenario)


def test_a_frame_too_large_fails_the_call_and_the_connection_is_not_reused() -> None:
    calls = []

    async def huge(meta: dict[str, Any], body: bytes, writer: protocol.FrameChannel) -> None:
        calls.append(meta)
        if len(calls) == 1:
            writer.write(protocol.HEADER.pack(protocol.MAX_META + 1, 0))
        else:
            writer.write(protocol.encode_frame({"status": 200}))

    async def scenario(client: ReplicaClient, address: str) -> dict[str, Any]:
        with pytest.raises(protocol.ProtocolError, match="frame too large"):
            await client.call(address, {"op": "invoke"}, b"", 5.0, key=KEY)
        meta, _ = await client.call(address, {"op": "invoke"}, b"", 5.0, key=KEY)
        return meta

    assert _run(huge, scenario) == {"status": 200}


def test_a_peer_without_the_key_is_unavailable() -> None:
    async def never(meta: dict[str, Any], body: bytes, writer: protocol.FrameChannel) -> None:
        raise AssertionError("no request may reach a peer that failed the handshake")

    async def scenario(client: ReplicaClient, address: str) -> None:
        with pytest.raises(ReplicaUnavailable, match="cannot connect"):
            await client.call(address, {"op": "invoke"}, b"", 5.0, key=KEY)

    _run(never, scenario, key="00" * 32)


def test_stream_parts_each_get_the_whole_timeout_and_a_loss_after_one_is_an_interrupted_stream() -> None:
    async def stream(meta: dict[str, Any], body: bytes, writer: protocol.FrameChannel) -> None:
        for part in (b"a", b"b", b"c"):
            # Each part comes later than the timeout after the request, but within it after the last part.
            await asyncio.sleep(0.12)
            writer.write(protocol.encode_frame({"kind": protocol.KIND_CHUNK}, part))
        if meta.get("break"):
            writer.close()
            return
        writer.write(protocol.encode_frame({"status": 200}))

    async def scenario(client: ReplicaClient, address: str) -> list[bytes]:
        parts: list[bytes] = []

        async def on_chunk(meta: dict[str, Any], body: bytes) -> None:
            parts.append(body)

        answer, _ = await client.call(address, {"op": "invoke", "stream": True}, b"", 0.2, key=KEY, on_chunk=on_chunk)
        assert answer == {"status": 200}
        with pytest.raises(StreamInterrupted):
            await client.call(address, {"op": "invoke", "stream": True, "break": True}, b"", 0.2, key=KEY,
                              on_chunk=on_chunk)  # fmt: skip
        return parts

    assert _run(stream, scenario) == [b"a", b"b", b"c", b"a", b"b", b"c"]


def test_an_idle_connection_the_replica_closed_is_replaced_without_failing_the_call() -> None:
    async def answer_then_close(meta: dict[str, Any], body: bytes, writer: protocol.FrameChannel) -> None:
        writer.write(protocol.encode_frame({"status": 200}))
        await writer.drain()
        writer.close()

    async def scenario(client: ReplicaClient, address: str) -> list[dict[str, Any]]:
        first, _ = await client.call(address, {"op": "invoke"}, b"", 5.0, key=KEY)
        # Whether the close has arrived by now or arrives after the next request is written, that
        # request must reach a fresh connection.
        second, _ = await client.call(address, {"op": "invoke"}, b"", 5.0, key=KEY)
        return [first, second]

    assert _run(answer_then_close, scenario) == [{"status": 200}, {"status": 200}]
