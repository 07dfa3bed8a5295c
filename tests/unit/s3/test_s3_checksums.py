"""The store's flexible checksums against a bitwise CRC written from each algorithm's published parameters.

The reference below is deliberately the slowest possible form (one bit at a time, straight from the
CRC model: width, reflected polynomial, all-ones init and xorout), so it shares nothing with the
library the store uses; random bodies fed in uneven chunks must give the same digests.
"""

from __future__ import annotations

import base64
import random

import pytest

from neurondock_platform.services.objects import checksums

# Reflected polynomials (the "poly" of each CRC model, bit-reversed) and widths.
_MODELS = {"CRC32": (0xEDB88320, 32), "CRC32C": (0x82F63B78, 32), "CRC64NVME": (0x9A6C9329AC4BC9B5, 64)}


def _bitwise_crc(data: bytes, poly: int, width: int) -> bytes:
    mask = (1 << width) - 1
    crc = mask
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return ((crc ^ mask) & mask).to_bytes(width // 8, "big")


@pytest.mark.parametrize("algorithm", sorted(_MODELS))
def test_digests_equal_the_bitwise_reference(algorithm):
    poly, width = _MODELS[algorithm]
    rng = random.Random(algorithm)
    for size in (0, 1, 7, 8, 9, 63, 64, 65, 1000, 4099):
        body = rng.randbytes(size)
        digests = checksums.Digests([algorithm])
        cut = rng.randrange(size + 1)
        digests.update(body[:cut])
        digests.update(body[cut:])
        assert digests.digest(algorithm) == _bitwise_crc(body, poly, width), (algorithm, size, cut)
        assert len(digests.digest(algorithm)) == checksums.CHECKSUM_ALGORITHMS[algorithm]


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [("CRC32", 0xCBF43926), ("CRC32C", 0xE3069283), ("CRC64NVME", 0xAE8B14860A799888)],
)
def test_crc_check_values(algorithm, expected):
    """The catalogue's check value: the CRC of b"123456789", here fed in two pieces."""
    digests = checksums.Digests([algorithm])
    digests.update(b"1234")
    digests.update(b"56789")
    width = checksums.CHECKSUM_ALGORITHMS[algorithm]
    assert digests.digest(algorithm) == expected.to_bytes(width, "big")


@pytest.mark.parametrize("algorithm", sorted(_MODELS))
def test_combined_part_crcs_equal_the_whole_objects(algorithm):
    """A FULL_OBJECT multipart checksum: combining the parts' CRCs gives the bitwise CRC of the whole."""
    poly, width = _MODELS[algorithm]
    rng = random.Random(f"combine-{algorithm}")
    for _ in range(12):
        whole = rng.randbytes(rng.randrange(0, 3000))
        cuts = sorted(rng.randrange(len(whole) + 1) for _ in range(rng.randrange(0, 5)))
        pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
        parts = [(checksums.checksum_of(piece, algorithm), len(piece)) for piece in pieces]
        combined = checksums.full_object_crc(algorithm, parts)
        assert base64.b64decode(combined) == _bitwise_crc(whole, poly, width), (algorithm, len(whole), cuts)
