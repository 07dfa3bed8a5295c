"""The router's replica client against a stand-in replica on loopback: frames, deadlines and losses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from neurondock_platform.dataplane import protocol
from neurondock_platform.dataplane.client import (
    Outbox,
    ReplicaClient,
    ReplicaTimeout,
    ReplicaUnavailable,
    StreamInterrupted,
)

KEY = "7a" * 32
# How the stand-in answers one request: given the request's meta and body and its connection.
Answer = Callable[[dict[str, Any], bytes, protocol.FrameChannel], Awaitable[None]]


async def _serve(answer: Answer, key: str = KEY, *, local: bool = False) -> tuple[list[asyncio.Server], str]:
    """Serve on loopback TCP, and with ``local`` on the key's Unix socket too, as an agent's replica does."""

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
    servers = [server]
    if local:
        path = protocol.local_name(key)
        servers.append(await loop.create_unix_server(lambda: protocol.FrameChannel(loop, on_open=opened), path))
    port = server.sockets[0].getsockname()[1]
    return servers, f"127.0.0.1:{port}"


def _run(answer: Answer, scenario: Callable[[ReplicaClient, str], Awaitable[Any]], key: str = KEY) -> Any:
    async def main() -> Any:
        servers, address = await _serve(answer, key)
        client = ReplicaClient()
        try:
            return await scenario(client, address)
        finally:
            await client.close()
            servers[0].close()

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


def test_one_connection_arms_one_deadline_timer_for_many_calls_and_each_call_keeps_its_own_deadline() -> None:
    async def answer_all_but_the_last(meta: dict[str, Any], body: bytes, writer: protocol.FrameChannel) -> None:
        if meta["n"] < 10:
            writer.write(protocol.encode_frame({"status": 200, "n": meta["n"]}))

    async def scenario(client: ReplicaClient, address: str) -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        armed = 0
        call_at = loop.call_at

        def counting(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            nonlocal armed
            armed += 1
            return call_at(*args, **kwargs)

        # The first call connects (its handshake has a timer of its own) and arms the connection's timer.
        await client.call(address, {"op": "invoke", "n": 0}, b"", 0.3, key=KEY)
        loop.call_at = counting  # type: ignore[method-assign]  # call_later arms through it too
        for n in range(1, 10):
            await client.call(address, {"op": "invoke", "n": n}, b"", 0.3, key=KEY)
        timers = armed
        # The timer armed for the first call fires 0.3 s after it: the call in flight then is not due.
        await asyncio.sleep(0.2)
        started = loop.time()
        with pytest.raises(ReplicaTimeout):
            await client.call(address, {"op": "invoke", "n": 10}, b"", 0.3, key=KEY)
        return timers, loop.time() - started

    timers, waited = _run(answer_all_but_the_last, scenario)
    assert timers == 0
    assert 0.3 <= waited < 0.6


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


def test_frames_of_one_pass_leave_together_at_its_end() -> None:
    # A replica woken by the first frame finds the pass's others already readable and batches them.
    async def echo(meta: dict[str, Any], body: bytes, writer: protocol.FrameChannel) -> None:
        writer.write(protocol.encode_frame({"status": 200, "n": meta["n"]}, body))

    async def scenario(client: ReplicaClient, address: str) -> tuple[list[int], list[int], list[int]]:
        # Two connections in the pool, each with its writes noted.
        await asyncio.gather(*(client.call(address, {"op": "invoke", "n": n}, b"", 5.0, key=KEY) for n in (0, 1)))
        written: list[int] = []
        for conn in client._idle[(address, KEY)]:
            write = conn.write_buffers

            def noting(buffers: tuple[bytes, ...], write: Any = write) -> None:
                start = protocol.HEADER.size
                meta_len, _ = protocol.HEADER.unpack_from(buffers[0])
                written.append(protocol.decode_meta(buffers[0][start : start + meta_len])["n"])
                write(buffers)

            conn.write_buffers = noting  # type: ignore[method-assign]
        calls = [
            asyncio.ensure_future(client.call(address, {"op": "invoke", "n": n}, b"", 5.0, key=KEY)) for n in (2, 3)
        ]
        await asyncio.sleep(0)  # both calls have run up to their wait for an answer
        held = list(written)
        answers = await asyncio.gather(*calls)
        return held, written, [meta["n"] for meta, _ in answers]

    held, written, answered = _run(echo, scenario)
    assert held == []
    assert written == [2, 3]
    assert answered == [2, 3]


def test_the_outbox_writes_nothing_to_a_connection_closed_before_the_pass_ended() -> None:
    class Conn:
        def __init__(self, loop: asyncio.AbstractEventLoop, closing: bool) -> None:
            self.loop, self.closing, self.written = loop, closing, []

        def is_closing(self) -> bool:
            return self.closing

        def write_buffers(self, buffers: tuple[bytes, ...]) -> None:
            self.written.append(buffers)

    async def main() -> tuple[Any, Any, Any]:
        loop = asyncio.get_running_loop()
        outbox = Outbox()
        kept, closed, large = Conn(loop, False), Conn(loop, False), Conn(loop, False)
        outbox.send(kept, {"n": 1}, b"x")  # type: ignore[arg-type]
        outbox.send(closed, {"n": 2}, b"y")  # type: ignore[arg-type]
        outbox.send(large, {"n": 3}, b"z" * protocol.SPLIT_BODY)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            outbox.send(kept, {"n": object()}, b"")  # type: ignore[arg-type]
        closed.closing = True
        await asyncio.sleep(0)
        return kept.written, closed.written, large.written

    kept, closed, large = asyncio.run(main())
    assert kept == [(protocol.encode_frame({"n": 1}, b"x"),)]
    assert closed == []
    assert large == [(protocol.encode_head({"n": 3}, protocol.SPLIT_BODY), b"z" * protocol.SPLIT_BODY)]


def test_a_replica_on_this_host_is_reached_on_its_unix_socket_with_the_same_handshake() -> None:
    async def family(meta: dict[str, Any], body: bytes, writer: protocol.FrameChannel) -> None:
        assert writer.transport is not None
        writer.send({"status": 200, "family": writer.transport.get_extra_info("socket").family.name}, body)

    async def main() -> list[str]:
        servers, address = await _serve(family, local=True)
        other = "6b" * 32  # no Unix socket for this key (a replica on another host): TCP
        servers_other, address_other = await _serve(family, other)
        client = ReplicaClient()
        try:
            here = await client.call(address, {"op": "invoke"}, b"x", 5.0, key=KEY)
            elsewhere = await client.call(address_other, {"op": "invoke"}, b"x", 5.0, key=other)
            return [here[0]["family"], elsewhere[0]["family"]]
        finally:
            await client.close()
            for server in servers + servers_other:
                server.close()

    assert asyncio.run(main()) == ["AF_UNIX", "AF_INET"]
