"""Request bodies as S3 receives them, verified before anything is committed.

A body is plain (``X-Amz-Content-SHA256`` is its hex sha256 or ``UNSIGNED-PAYLOAD``) or aws-chunked
(``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` with a checksum trailer, or ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``
with a signature per chunk). ``SigV4`` only trusted the header; here the decoded bytes are streamed
into a sink that hashes them on the way, and ``Payload.verify`` then checks the sha256, ``Content-MD5``
and the flexible checksum (header or trailer). A mismatch raises before the caller commits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Protocol

from flask import g, request

from neurondock_platform import sigv4
from neurondock_platform.api.s3.errors import (
    IncompleteBody,
    InvalidDigest,
    NotImplementedFeature,
    NotImplementedHeader,
    SignatureDoesNotMatch,
    XAmzContentSHA256Mismatch,
)
from neurondock_platform.api.s3.headers import UNIMPLEMENTED_CHECKSUMS
from neurondock_platform.services.credentials import CredentialCache
from neurondock_platform.services.objects import (
    CHECKSUM_ALGORITHMS,
    BadDigest,
    Digests,
    EntityTooLarge,
    InvalidArgument,
    InvalidRequest,
    verify_checksums,
)

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
READ_SIZE = 1024 * 1024
CHECKSUM_HEADER = "x-amz-checksum-"
# x-amz-checksum-* headers that are not checksums.
_NOT_CHECKSUMS = {"ALGORITHM", "MODE", "TYPE"}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK_SIZE_RE = re.compile(r"[0-9a-fA-F]{1,16}")


class Sink(Protocol):
    """Where decoded body bytes go: a blob on disk or memory; it keeps the running digests."""

    digests: Digests

    def write(self, data: bytes) -> None: ...


class MemorySink:
    """Collect a small body (an XML document) in memory, up to ``limit`` bytes."""

    def __init__(self, algorithms: Iterable[str], limit: int) -> None:
        self.digests = Digests(algorithms)
        self.buffer = bytearray()
        self.limit = limit

    def write(self, data: bytes) -> None:
        if len(self.buffer) + len(data) > self.limit:
            raise EntityTooLarge(size=len(self.buffer) + len(data), max_size=self.limit)
        self.digests.update(data)
        self.buffer += data


class ChunkSigner:
    """Check the signature chain of ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` chunks (and trailer)."""

    def __init__(self, key: bytes, amz_date: str, scope: str, seed_signature: str) -> None:
        self._key = key
        self._amz_date = amz_date
        self._scope = scope
        self.previous = seed_signature

    def _check(self, kind: str, hashes: list[str], signature: str | None) -> None:
        sts = "\n".join([f"AWS4-HMAC-SHA256-{kind}", self._amz_date, self._scope, self.previous, *hashes])
        expected = hmac.new(self._key, sts.encode(), hashlib.sha256).hexdigest()
        if signature is None or not hmac.compare_digest(expected, signature):
            raise SignatureDoesNotMatch()
        self.previous = signature

    def chunk(self, signature: str | None, data_sha256: str) -> None:
        self._check("PAYLOAD", [EMPTY_SHA256, data_sha256], signature)

    def trailer(self, trailers: dict[str, str]) -> None:
        signature = trailers.pop("x-amz-trailer-signature", None)
        canonical = "".join(f"{name}:{value}\n" for name, value in trailers.items())
        self._check("TRAILER", [hashlib.sha256(canonical.encode()).hexdigest()], signature)


class _Reader:
    """A small buffered reader over the raw input (lines for chunk headers, bytes for data)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._buf = bytearray()
        self._eof = False

    def _fill(self) -> None:
        data = self._raw.read(READ_SIZE)
        if data:
            self._buf += data
        else:
            self._eof = True

    def readline(self, limit: int) -> bytes:
        while True:
            idx = self._buf.find(b"\n")
            if idx >= 0:
                line = bytes(self._buf[: idx + 1])
                del self._buf[: idx + 1]
                return line
            if len(self._buf) > limit:
                raise InvalidRequest("Malformed aws-chunked body: chunk header too long.")
            if self._eof:
                line = bytes(self._buf)
                self._buf.clear()
                return line
            self._fill()

    def read(self, size: int) -> bytes:
        if not self._buf and not self._eof:
            self._fill()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def read_exact(self, size: int) -> bytes:
        out = b""
        while len(out) < size:
            data = self.read(size - len(out))
            if not data:
                break
            out += data
        return out


def _decode_b64(value: str, size: int) -> bool:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == size


@dataclass
class Payload:
    """A request body as a stream of decoded chunks plus what the client claimed about it."""

    chunks: Iterator[bytes]
    content_sha256: str | None = None
    content_md5: str | None = None
    header_checksums: dict[str, str] = field(default_factory=dict)
    trailer_algorithms: list[str] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)

    @property
    def requested_algorithms(self) -> list[str]:
        """The flexible checksum algorithms the client sent (to echo on the response)."""
        return [*self.header_checksums, *self.trailer_algorithms]

    def algorithms(self, *extra: str) -> list[str]:
        """Every digest a sink must compute to verify this body (plus ``extra``)."""
        wanted = ["MD5", *extra, *self.requested_algorithms]
        if self.content_sha256:
            wanted.append("SHA256")
        return list(dict.fromkeys(wanted))

    def expected_checksums(self) -> dict[str, str]:
        """The checksums to verify: headers, plus trailers (known once the body is read)."""
        expected = dict(self.header_checksums)
        for algorithm in self.trailer_algorithms:
            name = CHECKSUM_HEADER + algorithm.lower()
            value = self.trailers.get(name)
            if value is None or not _decode_b64(value, CHECKSUM_ALGORITHMS[algorithm]):
                raise InvalidRequest(f"The value specified in the {name} trailer is invalid or missing.")
            expected[algorithm] = value
        return expected

    def receive(self, sink: Sink) -> None:
        """Stream the whole body into ``sink``, then verify it (raising before any commit)."""
        for chunk in self.chunks:
            sink.write(chunk)
        self.verify(sink.digests)

    def verify(self, digests: Digests) -> None:
        if self.content_sha256 is not None:
            computed = digests.hexdigest("SHA256")
            if computed != self.content_sha256:
                raise XAmzContentSHA256Mismatch(client=self.content_sha256, server=computed)
        if self.content_md5 is not None and digests.b64digest("MD5") != self.content_md5:
            raise BadDigest("The Content-MD5 you specified did not match what we received.", algorithm="MD5")
        verify_checksums(digests, self.expected_checksums())


def _unsupported_checksum(header: str, algorithm: str) -> Exception:
    if algorithm in UNIMPLEMENTED_CHECKSUMS:
        return NotImplementedHeader(header=header)
    return InvalidRequest(f"Checksum algorithm {algorithm} is not supported.")


def checksum_algorithm_header(name: str) -> str | None:
    """Return the algorithm a header such as ``x-amz-checksum-algorithm`` names, upper case, or None."""
    value = request.headers.get(name)
    if value is None:
        return None
    algorithm = value.strip().upper()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise _unsupported_checksum(name, algorithm)
    return algorithm


def header_checksums(*, composite: bool = False) -> dict[str, str]:
    """Return the ``x-amz-checksum-<algorithm>`` headers sent (at most one), validated.

    A value that cannot be a checksum of its algorithm can match nothing: ``BadDigest``, as s3-tests
    expects of S3. ``composite`` allows the ``-<parts>`` suffix of a multipart object's checksum.
    """
    found: dict[str, str] = {}
    for name, value in request.headers.items():
        lower = name.lower()
        if not lower.startswith(CHECKSUM_HEADER):
            continue
        algorithm = lower[len(CHECKSUM_HEADER) :].upper()
        if algorithm in _NOT_CHECKSUMS:
            continue
        size = CHECKSUM_ALGORITHMS.get(algorithm)
        if size is None:
            raise _unsupported_checksum(lower, algorithm)
        value = value.strip()
        digest, dash, parts = value.rpartition("-") if composite and "-" in value else (value, "", "")
        if not _decode_b64(digest, size) or (dash and not parts.isdigit()):
            raise BadDigest(algorithm=algorithm)
        found[algorithm] = value
    if len(found) > 1:
        raise InvalidRequest("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
    return found


def _trailer_algorithms() -> list[str]:
    names = [n.strip().lower() for n in request.headers.get("x-amz-trailer", "").split(",") if n.strip()]
    algorithms = []
    for name in names:
        algorithm = name[len(CHECKSUM_HEADER) :].upper() if name.startswith(CHECKSUM_HEADER) else ""
        if algorithm in UNIMPLEMENTED_CHECKSUMS:
            raise NotImplementedHeader(header=f"x-amz-trailer: {name}")
        if algorithm not in CHECKSUM_ALGORITHMS:
            raise InvalidRequest(f"The value specified in the x-amz-trailer header is not supported: {name}")
        algorithms.append(algorithm)
    return algorithms


def _raw_stream() -> IO[bytes]:
    if request.content_length is not None or request.environ.get("wsgi.input_terminated"):
        return request.stream
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        # The server (uvicorn) removes the transfer chunking, but a2wsgi does not set
        # wsgi.input_terminated, so werkzeug would hand out an empty stream.
        stream: IO[bytes] = request.environ["wsgi.input"]
        return stream
    return io.BytesIO(b"")


def _length_bounded_stream(declared: int | None) -> IO[bytes]:
    """Return the stream a plain body of ``declared`` bytes is read from.

    With a Content-Length the server's own input is read directly, never past that length (``_plain_chunks``
    stops there): werkzeug's ``LimitedStream`` would copy every read twice more, about 0.05 s of CPU for a
    43 MB upload (docs/measured.md).
    """
    raw = request.environ.get("wsgi.input")
    if declared is None or raw is None or request.environ.get("wsgi.input_terminated"):
        return _raw_stream()
    stream: IO[bytes] = raw
    return stream


def _plain_chunks(raw: IO[bytes], length: int | None, limit: int) -> Iterator[bytes]:
    remaining = length
    total = 0
    while remaining is None or remaining > 0:
        data = raw.read(READ_SIZE if remaining is None else min(READ_SIZE, remaining))
        if not data:
            break
        total += len(data)
        if total > limit:
            raise EntityTooLarge(size=total, max_size=limit)
        if remaining is not None:
            remaining -= len(data)
        yield data
    if remaining:
        raise IncompleteBody()


def _aws_chunks(
    raw: IO[bytes],
    *,
    signer: ChunkSigner | None,
    trailer_signed: bool,
    trailers: dict[str, str],
    decoded_length: int | None,
    limit: int,
) -> Iterator[bytes]:
    reader = _Reader(raw)
    total = 0
    while True:
        line = reader.readline(4096)
        if not line.endswith(b"\r\n"):
            raise IncompleteBody()
        size_text, _, extension = line[:-2].decode("latin-1").partition(";")
        if not _CHUNK_SIZE_RE.fullmatch(size_text.strip()):
            raise InvalidRequest("Malformed aws-chunked body: invalid chunk size.")
        size = int(size_text, 16)
        name, _, value = extension.partition("=")
        signature = value.strip() if name.strip() == "chunk-signature" else None
        digest = hashlib.sha256() if signer is not None else None
        remaining = size
        while remaining:
            data = reader.read(min(remaining, READ_SIZE))
            if not data:
                raise IncompleteBody()
            remaining -= len(data)
            total += len(data)
            if total > limit:
                raise EntityTooLarge(size=total, max_size=limit)
            if digest is not None:
                digest.update(data)
            yield data
        if signer is not None and digest is not None:
            signer.chunk(signature, digest.hexdigest())
        if size == 0:
            break
        if reader.read_exact(2) != b"\r\n":
            raise InvalidRequest("Malformed aws-chunked body: chunk data is not followed by CRLF.")
    while True:
        line = reader.readline(8192)
        if not line.strip():
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise InvalidRequest("Malformed aws-chunked body: invalid trailer.")
        trailers[name.strip().lower()] = value.strip()
    if signer is not None and trailer_signed:
        signer.trailer(trailers)
    if decoded_length is not None and total != decoded_length:
        raise IncompleteBody()


def _chunk_signer(credentials: CredentialCache) -> ChunkSigner:
    # Each chunk's signature chains from the request's own, with the key and time it was verified with.
    verified: sigv4.Verified | None = g.get("sigv4")
    if verified is None or verified.signature.presigned:
        raise SignatureDoesNotMatch()
    signed, credential = verified.signature, verified.credential
    key = sigv4.signing_key(credential.secret_access_key, signed.date, signed.region, signed.service)
    return ChunkSigner(key, signed.amz_date, signed.scope, signed.signature)


def open_payload(credentials: CredentialCache, *, limit: int, checksum_headers: bool = True) -> Payload:
    """Describe this request's body; raises for malformed checksum or hash headers up front.

    ``checksum_headers=False`` when the request's ``x-amz-checksum-*`` headers describe something else
    than the body (CompleteMultipartUpload: the whole object).
    """
    headers = request.headers
    content_md5 = headers.get("Content-MD5")
    if content_md5 is not None:
        content_md5 = content_md5.strip()
        if not _decode_b64(content_md5, 16):
            raise InvalidDigest()
    declared_checksums = header_checksums() if checksum_headers else {}
    declared = request.content_length
    encodings = [c.strip().lower() for c in headers.get("Content-Encoding", "").split(",")]
    if declared is not None and declared > limit and "aws-chunked" not in encodings:
        raise EntityTooLarge(size=declared, max_size=limit)
    sha = headers.get("x-amz-content-sha256")
    if sha is None and g.get("s3_presigned"):
        sha = UNSIGNED_PAYLOAD  # a presigned URL signs no payload
    if "aws-chunked" in encodings and not (sha or "").startswith("STREAMING-"):
        # The body would be stored with its chunk framing: refuse rather than guess (docs/s3.md).
        raise InvalidRequest("Content-Encoding aws-chunked requires a STREAMING-* x-amz-content-sha256.")
    if sha is None:
        # Unsigned body hash: authenticate() already read the body and signed over its sha256.
        return Payload(
            chunks=iter([request.get_data(cache=True)]),
            content_md5=content_md5,
            header_checksums=declared_checksums,
        )
    if sha.startswith("STREAMING-"):
        return _streaming_payload(credentials, sha, content_md5, declared_checksums, limit)
    if headers.get("x-amz-trailer"):
        raise InvalidRequest("x-amz-trailer requires an aws-chunked body (STREAMING-*-TRAILER).")
    if sha == UNSIGNED_PAYLOAD:
        content_sha256 = None
    elif _HEX64.fullmatch(sha):
        content_sha256 = sha
    else:
        raise InvalidArgument(
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid "
            "sha256 value.",
            name="x-amz-content-sha256",
            value=sha,
        )
    _require_declared_checksum(declared_checksums, [])
    return Payload(
        chunks=_plain_chunks(_length_bounded_stream(declared), declared, limit),
        content_sha256=content_sha256,
        content_md5=content_md5,
        header_checksums=declared_checksums,
    )


def _require_declared_checksum(header_checksums: dict[str, str], trailer_algorithms: list[str]) -> None:
    if request.headers.get("x-amz-sdk-checksum-algorithm") and not header_checksums and not trailer_algorithms:
        raise InvalidRequest(
            "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* or x-amz-trailer "
            "headers were found."
        )


def _streaming_payload(
    credentials: CredentialCache,
    sha: str,
    content_md5: str | None,
    header_checksums: dict[str, str],
    limit: int,
) -> Payload:
    if sha not in (STREAMING_UNSIGNED_TRAILER, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER):
        raise NotImplementedFeature(f"x-amz-content-sha256 {sha} is not supported by this store.")
    trailer_algorithms = _trailer_algorithms()
    if trailer_algorithms and not sha.endswith("-TRAILER"):
        raise InvalidRequest(f"x-amz-trailer is not allowed with x-amz-content-sha256 {sha}.")
    _require_declared_checksum(header_checksums, trailer_algorithms)
    decoded_text = request.headers.get("x-amz-decoded-content-length")
    decoded_length: int | None = None
    if decoded_text is not None:
        if not decoded_text.strip().isdigit():
            raise InvalidArgument(
                "Invalid x-amz-decoded-content-length.",
                name="x-amz-decoded-content-length",
                value=decoded_text,
            )
        decoded_length = int(decoded_text)
        if decoded_length > limit:
            raise EntityTooLarge(size=decoded_length, max_size=limit)
    signer = _chunk_signer(credentials) if sha in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER) else None
    payload = Payload(
        chunks=iter(()),
        content_md5=content_md5,
        header_checksums=header_checksums,
        trailer_algorithms=trailer_algorithms,
    )
    payload.chunks = _aws_chunks(
        _raw_stream(),
        signer=signer,
        trailer_signed=sha == STREAMING_SIGNED_TRAILER,
        trailers=payload.trailers,
        decoded_length=decoded_length,
        limit=limit,
    )
    return payload


def read_small_body(
    credentials: CredentialCache, limit: int = 4 * 1024 * 1024, *, checksum_headers: bool = True
) -> bytes:
    """Read and verify a small body (XML documents of bucket and multipart requests)."""
    payload = open_payload(credentials, limit=limit, checksum_headers=checksum_headers)
    sink = MemorySink(payload.algorithms(), limit)
    payload.receive(sink)
    return bytes(sink.buffer)
