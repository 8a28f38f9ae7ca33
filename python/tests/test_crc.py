"""CRC32C: FORMAT.md §2's test vectors and the combination used for payload and raw CRCs."""

import random

import pytest

from ckpt_container._crc import combine, crc32c

# RFC 3720 §B.4's read command PDU, as FORMAT.md §2 prints it.
ISCSI_PDU = bytes.fromhex(
    "01c00000000000000000000000000000"
    "14000000000004000000001400000018"
    "28000000000000000200000000000000")


@pytest.mark.parametrize("data, expected", [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (ISCSI_PDU, 0xD9963A56),
])
def test_format_md_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected


def bitwise_reference(data: bytes) -> int:
    """The bit-at-a-time reference printed in FORMAT.md §2."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_hardware_matches_reference_and_combine_matches_concatenation() -> None:
    rng = random.Random(1)
    for _ in range(200):
        a = rng.randbytes(rng.randint(0, 300))
        b = rng.randbytes(rng.choice([0, 1, 7, 64, 1000, 4099]))
        assert crc32c(a) == bitwise_reference(a)
        assert combine(crc32c(a), crc32c(b), len(b)) == crc32c(a + b)
        assert crc32c(b, crc32c(a)) == crc32c(a + b)
