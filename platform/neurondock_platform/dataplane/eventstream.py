"""AWS event-stream framing for ``InvokeEndpointWithResponseStream`` (docs/streaming.md, "The wire").

A message is a 12-byte prelude (total length, headers length, CRC32 of those 8 bytes), the headers,
the payload, and a CRC32 of everything before it. Headers here are all strings (value type 7):
``:message-type`` is ``event`` or ``exception``, ``:event-type`` / ``:exception-type`` names the
member of the response's ``ResponseStream`` union, ``:content-type`` describes the payload.
"""

from __future__ import annotations

import json
import struct
import zlib

CONTENT_TYPE = "application/vnd.amazon.eventstream"
PAYLOAD_PART = "PayloadPart"
MODEL_STREAM_ERROR = "ModelStreamError"
INTERNAL_STREAM_FAILURE = "InternalStreamFailure"
# ModelStreamError's two ErrorCodes (sagemaker-runtime's service model).
TIME_EXCEEDED = "ModelInvocationTimeExceeded"
STREAM_BROKEN = "StreamBroken"

_STRING = 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
# Prelude, its CRC and the message CRC.
_OVERHEAD = _PRELUDE.size + 2 * _CRC.size


def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return b"".join((struct.pack(">B", len(n)), n, struct.pack(">BH", _STRING, len(v)), v))


def message(headers: dict[str, str], payload: bytes) -> bytes:
    """Encode one event-stream message with string headers."""
    head = b"".join(_header(name, value) for name, value in headers.items())
    prelude = _PRELUDE.pack(_OVERHEAD + len(head) + len(payload), len(head))
    prelude += _CRC.pack(zlib.crc32(prelude))
    body = b"".join((prelude, head, payload))
    return body + _CRC.pack(zlib.crc32(body))


def event(event_type: str, payload: bytes, content_type: str = "application/octet-stream") -> bytes:
    """Encode one event (a ``PayloadPart`` carries the model's bytes as its payload)."""
    return message(
        {":event-type": event_type, ":message-type": "event", ":content-type": content_type},
        payload,
    )


def payload_part(chunk: bytes) -> bytes:
    """Encode one ``PayloadPart`` event."""
    return event(PAYLOAD_PART, chunk)


def exception(exception_type: str, message_text: str, error_code: str | None = None) -> bytes:
    """Encode an exception event; boto3 raises it as ``EventStreamError`` while iterating."""
    fields = {"Message": message_text}
    if error_code is not None:
        fields["ErrorCode"] = error_code
    return message(
        {":exception-type": exception_type, ":message-type": "exception", ":content-type": "application/json"},
        json.dumps(fields).encode(),
    )
