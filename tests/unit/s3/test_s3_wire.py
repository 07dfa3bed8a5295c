"""Pure helpers of the S3 blueprint: aws-chunked decoding, chunk signatures, ranges, copy sources, XML."""

from __future__ import annotations

import hashlib
import hmac
import io

import pytest

from neurondock_platform.api.s3 import errors as wire
from neurondock_platform.api.s3 import xmlio
from neurondock_platform.api.s3.objects import parse_copy_source, parse_range
from neurondock_platform.api.s3.payload import EMPTY_SHA256, ChunkSigner, _aws_chunks
from neurondock_platform.services import objects as svc

KEY = b"k" * 32
DATE = "20260101T000000Z"
SCOPE = "20260101/us-east-1/s3/aws4_request"


def _decode(body: bytes, **kwargs):
    trailers: dict[str, str] = {}
    options = {"signer": None, "trailer_signed": False, "decoded_length": None, "limit": 1 << 30} | kwargs
    data = b"".join(_aws_chunks(io.BytesIO(body), trailers=trailers, **options))
    return data, trailers


def test_decode_unsigned_trailer():
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n"
    data, trailers = _decode(body, decoded_length=11)
    assert data == b"hello world"
    assert trailers == {"x-amz-checksum-crc32": "DUoRhQ=="}


def test_decode_rejects_malformed_bodies():
    with pytest.raises(wire.IncompleteBody):
        _decode(b"5\r\nhel")
    with pytest.raises(svc.InvalidRequest):
        _decode(b"zz\r\nhello\r\n0\r\n\r\n")
    with pytest.raises(svc.InvalidRequest):
        _decode(b"5\r\nhelloXX0\r\n\r\n")
    with pytest.raises(wire.IncompleteBody):
        _decode(b"5\r\nhello\r\n0\r\n\r\n", decoded_length=6)
    with pytest.raises(svc.EntityTooLarge):
        _decode(b"5\r\nhello\r\n0\r\n\r\n", limit=4)
    with pytest.raises(svc.InvalidRequest):
        _decode(b"1" * 5000)


def _signed_body(pieces, seed, trailer=None):
    out, previous = b"", seed
    for piece in pieces:
        sts = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                DATE,
                SCOPE,
                previous,
                EMPTY_SHA256,
                hashlib.sha256(piece).hexdigest(),
            ]
        )
        sig = hmac.new(KEY, sts.encode(), hashlib.sha256).hexdigest()
        out += f"{len(piece):x};chunk-signature={sig}\r\n".encode() + piece + b"\r\n"
        previous = sig
    if trailer is not None:
        out = out[:-2]
        canonical = f"{trailer[0]}:{trailer[1]}\n"
        sts = "\n".join(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                DATE,
                SCOPE,
                previous,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        sig = hmac.new(KEY, sts.encode(), hashlib.sha256).hexdigest()
        out += f"{trailer[0]}:{trailer[1]}\r\nx-amz-trailer-signature:{sig}\r\n\r\n".encode()
    return out


def test_signed_chunks_and_trailer():
    seed = "a" * 64
    body = _signed_body([b"abc", b"defg", b""], seed)
    data, _ = _decode(body, signer=ChunkSigner(KEY, DATE, SCOPE, seed))
    assert data == b"abcdefg"

    body = _signed_body([b"abc", b""], seed, trailer=("x-amz-checksum-crc32", "NSRBwg=="))
    data, trailers = _decode(body, signer=ChunkSigner(KEY, DATE, SCOPE, seed), trailer_signed=True)
    assert data == b"abc"
    assert trailers == {"x-amz-checksum-crc32": "NSRBwg=="}

    tampered = body.replace(b"NSRBwg==", b"AAAAAA==")
    with pytest.raises(wire.SignatureDoesNotMatch):
        _decode(tampered, signer=ChunkSigner(KEY, DATE, SCOPE, seed), trailer_signed=True)
    with pytest.raises(wire.SignatureDoesNotMatch):
        _decode(_signed_body([b"abc", b""], "b" * 64), signer=ChunkSigner(KEY, DATE, SCOPE, seed))


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=2-", 10, (2, 9)),
        ("bytes=-4", 10, (6, 9)),
        ("bytes=-40", 10, (0, 9)),
        ("bytes=3-99", 10, (3, 9)),
        ("bytes=5-1", 10, None),
        ("bytes=0-1,3-4", 10, None),
        ("lines=1-2", 10, None),
    ],
)
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=0-", 0), ("bytes=-1", 0)])
def test_unsatisfiable_ranges(header, size):
    with pytest.raises(wire.InvalidRange):
        parse_range(header, size)


def test_parse_copy_source():
    assert parse_copy_source("bkt/a%20b/c") == ("bkt", "a b/c")
    assert parse_copy_source("/bkt/k?versionId=null") == ("bkt", "k")
    for bad in ["bkt", "/bkt/", "bkt/k?versionId=3"]:
        with pytest.raises(svc.InvalidArgument):
            parse_copy_source(bad)


def test_xml_parsing_strips_namespaces_and_refuses_entities():
    root = xmlio.parse(
        b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet></Delete>', "Delete"
    )
    assert xmlio.text(root, "Quiet") == "true"
    assert xmlio.text(root, "Missing") is None
    with pytest.raises(svc.MalformedXML):
        xmlio.parse(b"<Other/>", "Delete")
    with pytest.raises(svc.MalformedXML):
        xmlio.parse(b'<!DOCTYPE x [<!ENTITY a "b">]><Delete>&a;</Delete>', "Delete")
