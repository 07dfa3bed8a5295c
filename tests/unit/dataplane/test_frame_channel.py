"""FrameChannel.serve: frames handed to a callback one request at a time, and how reading ended."""

from __future__ import annotations

import asyncio
from typing import Any

from neurondock_platform.dataplane import protocol


class _Transport:
    """Just enough of a transport for a channel that is only read."""

    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return False


def _channel(loop: asyncio.AbstractEventLoop) -> protocol.FrameChannel:
    channel = protocol.FrameChannel(loop)
    channel.connection_made(_Transport())  # type: ignore[arg-type]
    return channel


def _frame(n: int) -> bytes:
    return protocol.encode_frame({"n": n}, b"body")


def test_served_frames_come_one_at_a_time_and_the_next_once_the_last_is_released() -> None:
    async def scenario() -> tuple[list[int], list[int], list[int], BaseException]:
        channel = _channel(asyncio.get_running_loop())
        got: list[int] = []
        ended = channel.serve(lambda frame: got.append(frame[0]["n"]))
        channel.data_received(_frame(1) + _frame(2) + _frame(3)[:5])
        first = list(got)
        channel.data_received(_frame(3)[5:])
        channel.release()
        second = list(got)
        channel.release()
        channel.release()
        third = list(got)
        channel.connection_lost(None)
        return first, second, third, await ended

    first, second, third, ended = asyncio.run(scenario())
    assert first == [1]  # the second waits until the first is answered
    assert second == [1, 2]
    assert third == [1, 2, 3]
    assert isinstance(ended, asyncio.IncompleteReadError)


def test_a_frame_answered_inside_the_callback_lets_the_next_one_in_at_once() -> None:
    async def scenario() -> list[int]:
        channel = _channel(asyncio.get_running_loop())
        got: list[int] = []

        def answer_at_once(frame: tuple[dict[str, Any], bytes]) -> None:
            got.append(frame[0]["n"])
            channel.release()

        channel.serve(answer_at_once)
        channel.data_received(b"".join(_frame(n) for n in range(4)))
        return got

    assert asyncio.run(scenario()) == [0, 1, 2, 3]


def test_frames_that_came_before_serve_are_served_and_a_malformed_one_ends_reading() -> None:
    async def scenario() -> tuple[list[int], BaseException]:
        channel = _channel(asyncio.get_running_loop())
        channel.data_received(_frame(7))
        got: list[int] = []
        ended = channel.serve(lambda frame: got.append(frame[0]["n"]))
        channel.release()
        channel.data_received(protocol.HEADER.pack(protocol.MAX_META + 1, 0))
        return got, await ended

    got, ended = asyncio.run(scenario())
    assert got == [7]
    assert isinstance(ended, protocol.ProtocolError)


def test_a_meta_decodes_as_json_with_or_without_whitespace_and_refuses_anything_else() -> None:
    import json

    import pytest

    meta = {"op": "invoke", "content_type": "application/x-npy", "custom_attributes": None, "outstanding": 3}
    compact = json.dumps(meta, separators=(",", ":")).encode()
    assert protocol.decode_meta(compact) == meta
    assert protocol.decode_meta(b" \n" + json.dumps(meta).encode() + b" ") == meta
    assert protocol.decode_meta(b'{"n":"\\u00fc\xc3\xbc"}') == {"n": "üü"}
    for bad in (b"", b"{", b'{"a":1}x', b'{"a":1}{"b":2}', b"nul", b"\xff"):
        with pytest.raises(ValueError):
            protocol.decode_meta(bad)
