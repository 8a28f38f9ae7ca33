"""CRC32C (FORMAT.md §2): hardware-accelerated checksums and their combination.

The checksum itself comes from the ``crc32c`` package (SSE4.2 / ARMv8 CRC
instructions, any buffer-protocol object, the GIL released on large inputs).
``combine`` is zlib's ``crc32_combine`` algorithm for the Castagnoli
polynomial: the CRC of ``a + b`` from the CRCs of ``a`` and ``b`` and the
length of ``b``, in O(log len) without touching the data.
"""

from __future__ import annotations

from functools import lru_cache
from typing import List

import crc32c as _crc32c

_POLY = 0x82F63B78  # CRC32C, reflected


def crc32c(data: object, value: int = 0) -> int:
    """CRC32C of ``data`` (any contiguous buffer), extending the CRC ``value`` of preceding bytes."""
    return _crc32c.crc32c(data, value)


def _multiply_mod_p(a: int, b: int) -> int:
    """a·b modulo the CRC polynomial, both reflected (zlib's ``multmodp``)."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if (a & (m - 1)) == 0:
                break
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return p


def _powers() -> List[int]:
    table = [1 << 30]  # x^1
    for _ in range(31):
        table.append(_multiply_mod_p(table[-1], table[-1]))
    return table


_X2N = _powers()  # x^(2^n) mod p


@lru_cache(maxsize=256)
def _x_to_8n(length: int) -> int:
    """x^(8·length) modulo the polynomial (cached: chunk lengths repeat)."""
    p = 1 << 31  # x^0
    k = 3
    while length:
        if length & 1:
            p = _multiply_mod_p(_X2N[k & 31], p)
        length >>= 1
        k += 1
    return p


def combine(crc_a: int, crc_b: int, length_b: int) -> int:
    """The CRC32C of ``a + b`` given ``crc32c(a)``, ``crc32c(b)`` and ``len(b)``."""
    if length_b == 0:
        return crc_a
    return _multiply_mod_p(_x_to_8n(length_b), crc_a) ^ crc_b
