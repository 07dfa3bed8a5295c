"""Digests of object bodies: MD5 for ETags and S3's flexible checksums (CRC32, CRC32C, CRC64NVME, SHA1, SHA256,
SHA512), and the CRC arithmetic that turns part CRCs into a whole object's (``combine_crc``).

CRC32 comes from zlib; CRC32C and CRC64NVME from ``anycrc`` (a maintained C implementation of every CRC
in the RevEng catalogue, several GB/s here). ``awscrt``, which botocore uses for the same two, was not
chosen: merely installing it switches botocore in every process of the environment to its CRT signers.
How S3 shows each checksum is in docs/s3.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import anycrc

from neurondock_platform.services.objects.errors import BadDigest

# S3's flexible checksum algorithms and the size of their digests.
CHECKSUM_ALGORITHMS: dict[str, int] = {
    "CRC32": 4,
    "CRC32C": 4,
    "CRC64NVME": 8,
    "SHA1": 20,
    "SHA256": 32,
    "SHA512": 64,
}
# The CRCs, by reflected polynomial and width: the only algorithms a FULL_OBJECT multipart checksum can use,
# because only a CRC of a concatenation can be computed from the CRCs of its pieces (docs/s3.md).
CRC_MODELS: dict[str, tuple[int, int]] = {
    "CRC32": (0xEDB88320, 32),
    "CRC32C": (0x82F63B78, 32),
    "CRC64NVME": (0x9A6C9329AC4BC9B5, 64),
}


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...


class _ZlibCrc32:
    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def digest(self) -> bytes:
        return (self._crc & 0xFFFFFFFF).to_bytes(4, "big")


class _AnyCrc:
    """A running CRC over one of anycrc's catalogue models."""

    def __init__(self, model: str, width: int) -> None:
        self._model = anycrc.Model(model)
        self._width = width
        self._crc: int | None = None

    def update(self, data: bytes) -> None:
        self._crc = self._model.calc(data, self._crc)

    def digest(self) -> bytes:
        crc = self._model.calc(b"") if self._crc is None else self._crc
        return int(crc).to_bytes(self._width // 8, "big")


def _new_hash(algorithm: str) -> _Hash:
    if algorithm == "MD5":
        return hashlib.md5(usedforsecurity=False)
    if algorithm == "SHA1":
        return hashlib.sha1(usedforsecurity=False)
    if algorithm == "SHA256":
        return hashlib.sha256()
    if algorithm == "SHA512":
        return hashlib.sha512()
    if algorithm == "CRC32":
        return _ZlibCrc32()
    if algorithm == "CRC32C":
        return _AnyCrc("CRC32C", 32)
    if algorithm == "CRC64NVME":
        return _AnyCrc("CRC64-NVME", 64)
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


class Digests:
    """Running digests of a body: MD5 for the ETag plus whichever checksums were asked for."""

    def __init__(self, algorithms: Iterable[str] = ("MD5",)) -> None:
        self._hashes = {name: _new_hash(name) for name in dict.fromkeys(algorithms)}
        self.size = 0

    def update(self, data: bytes) -> None:
        self.size += len(data)
        for h in self._hashes.values():
            h.update(data)

    @property
    def active(self) -> bool:
        """Whether any digest is being computed (an empty set only counts bytes)."""
        return bool(self._hashes)

    def __contains__(self, algorithm: object) -> bool:
        return algorithm in self._hashes

    def digest(self, algorithm: str) -> bytes:
        return self._hashes[algorithm].digest()

    def hexdigest(self, algorithm: str) -> str:
        return self.digest(algorithm).hex()

    def b64digest(self, algorithm: str) -> str:
        return base64.b64encode(self.digest(algorithm)).decode("ascii")

    def checksums(self) -> dict[str, str]:
        """Return the flexible checksums computed (not MD5), base64 as S3 shows them."""
        return {name: self.b64digest(name) for name in self._hashes if name in CHECKSUM_ALGORITHMS}


def checksum_of(data: bytes, algorithm: str) -> str:
    """Return the base64 checksum of ``data`` as S3 shows it (``x-amz-checksum-<algorithm>``)."""
    digests = Digests([algorithm])
    digests.update(data)
    return digests.b64digest(algorithm)


def verify_checksums(digests: Digests, expected: Mapping[str, str]) -> None:
    """Raise ``BadDigest`` unless every expected base64 checksum matches the computed one."""
    for algorithm, value in expected.items():
        if digests.b64digest(algorithm) != value:
            raise BadDigest(algorithm=algorithm)


def multipart_etag(part_etags: Sequence[str]) -> str:
    """Return S3's ETag for a multipart object: md5 of the concatenated part md5s, then ``-N``."""
    joined = b"".join(binascii.unhexlify(e) for e in part_etags)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(part_etags)}"


def _multmodp(a: int, b: int, poly: int, width: int) -> int:
    """Multiply two polynomials modulo the CRC polynomial, in the reflected bit order CRCs use."""
    m = 1 << (width - 1)
    product = 0
    while True:
        if a & m:
            product ^= b
            if not a & (m - 1):
                return product
        m >>= 1
        b = (b >> 1) ^ poly if b & 1 else b >> 1


def _x8nmodp(n: int, poly: int, width: int) -> int:
    """Return x^(8n) modulo the polynomial (what appending n zero bytes multiplies a CRC register by)."""
    power = 1 << (width - 2)  # x^1
    result = 1 << (width - 1)  # x^0
    bits = 8 * n
    while bits:
        if bits & 1:
            result = _multmodp(power, result, poly, width)
        bits >>= 1
        if bits:
            power = _multmodp(power, power, poly, width)
    return result


def combine_crc(algorithm: str, crc1: bytes, crc2: bytes, len2: int) -> bytes:
    """Return the CRC of A+B from crc(A), crc(B) and len(B) (zlib's crc32_combine, for any of ``CRC_MODELS``).

    All three CRCs start from and finish with all ones, so those terms cancel: crc(A+B) = crc(A)·x^(8·len B)
    + crc(B) over GF(2), reduced modulo the polynomial.
    """
    poly, width = CRC_MODELS[algorithm]
    shifted = _multmodp(_x8nmodp(len2, poly, width), int.from_bytes(crc1, "big"), poly, width)
    return (shifted ^ int.from_bytes(crc2, "big")).to_bytes(width // 8, "big")


def full_object_crc(algorithm: str, parts: Sequence[tuple[str, int]]) -> str:
    """Return the base64 CRC of a whole object from its parts' (base64 CRC, size), in order."""
    crc = base64.b64decode(checksum_of(b"", algorithm))
    for value, size in parts:
        crc = combine_crc(algorithm, crc, base64.b64decode(value), size)
    return base64.b64encode(crc).decode("ascii")
