"""User metadata (``x-amz-meta-*``) values on the wire: UTF-8 or RFC 2047 in, RFC 2047 out (docs/s3.md).

S3 stores the text a value spells and returns a value holding non-ASCII characters as an RFC 2047
encoded-word; an ASCII value goes out as it came in.
"""

from __future__ import annotations

import base64
import contextlib
import email.errors
import email.header

_ENCODED_WORD = "=?"


def decode_value(raw: str) -> str:
    """The text a request's header value spells (the server hands header bytes over as latin-1)."""
    value = raw
    if not raw.isascii():
        # Clients send UTF-8 bytes (botocore, curl); bytes that are not UTF-8 keep their latin-1 reading.
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
            value = raw.encode("latin-1").decode("utf-8")
    elif _ENCODED_WORD in raw:
        with contextlib.suppress(email.errors.HeaderParseError, LookupError, UnicodeDecodeError, ValueError):
            value = str(email.header.make_header(email.header.decode_header(raw)))
    return value


def encode_value(value: str) -> str:
    """The header value S3 returns for stored text: as is when ASCII, else one RFC 2047 encoded-word."""
    if value.isascii():
        return value
    return f"=?UTF-8?B?{base64.b64encode(value.encode('utf-8')).decode('ascii')}?="
