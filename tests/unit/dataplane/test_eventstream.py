"""The event-stream encoder, decoded by botocore's own parser as boto3 decodes a response stream."""

from __future__ import annotations

import json

import botocore.session
import pytest
from botocore.eventstream import ChecksumMismatch, EventStream, EventStreamBuffer
from botocore.exceptions import EventStreamError
from botocore.parsers import EventStreamJSONParser

from neurondock_platform.dataplane import eventstream


class _Raw:
    """A raw HTTP body that hands botocore the bytes in the given pieces."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def stream(self):
        yield from self.pieces

    def close(self) -> None:
        pass


def _boto3_stream(pieces: list[bytes]) -> EventStream:
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    output = model.operation_model("InvokeEndpointWithResponseStream").output_shape.members["Body"]
    return EventStream(_Raw(pieces), output, EventStreamJSONParser(), "InvokeEndpointWithResponseStream")


def test_payload_parts_decode_to_the_bytes_in_order_even_when_split_across_reads() -> None:
    parts = [b"", b'{"token": "Hel', b"\x00\xff binary", b"x" * 70_000]
    wire = b"".join(eventstream.payload_part(p) for p in parts)
    # One TCP read may end anywhere: feed botocore the bytes in 7-byte pieces.
    pieces = [wire[i : i + 7] for i in range(0, len(wire), 7)]
    events = list(_boto3_stream(pieces))
    assert events == [{"PayloadPart": {"Bytes": p}} for p in parts]


def test_headers_and_crcs_are_the_ones_botocore_checks() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(eventstream.payload_part(b"abc"))
    (msg,) = list(buffer)
    assert msg.headers == {
        ":event-type": "PayloadPart",
        ":message-type": "event",
        ":content-type": "application/octet-stream",
    }
    assert msg.payload == b"abc"
    corrupt = bytearray(eventstream.payload_part(b"abc"))
    corrupt[-5] ^= 0xFF  # one payload byte
    buffer = EventStreamBuffer()
    buffer.add_data(bytes(corrupt))
    with pytest.raises(ChecksumMismatch):
        list(buffer)


def test_a_model_stream_error_is_raised_by_boto3_mid_iteration() -> None:
    wire = eventstream.payload_part(b"first") + eventstream.exception(
        eventstream.MODEL_STREAM_ERROR, "the model failed", eventstream.STREAM_BROKEN
    )
    events = iter(_boto3_stream([wire]))
    assert next(events) == {"PayloadPart": {"Bytes": b"first"}}
    with pytest.raises(EventStreamError) as caught:
        next(events)
    assert caught.value.response["Error"] == {"Code": "ModelStreamError", "Message": "the model failed"}
    # boto3 does not surface ErrorCode, but it is on the wire for clients that read the frame.
    buffer = EventStreamBuffer()
    buffer.add_data(eventstream.exception(eventstream.MODEL_STREAM_ERROR, "m", eventstream.TIME_EXCEEDED))
    (msg,) = list(buffer)
    assert msg.headers[":message-type"] == "exception"
    assert json.loads(msg.payload) == {"Message": "m", "ErrorCode": "ModelInvocationTimeExceeded"}


def test_an_internal_stream_failure_is_raised_by_boto3() -> None:
    wire = eventstream.exception(eventstream.INTERNAL_STREAM_FAILURE, "broken inside")
    with pytest.raises(EventStreamError) as caught:
        list(_boto3_stream([wire]))
    assert caught.value.response["Error"]["Code"] == "InternalStreamFailure"
