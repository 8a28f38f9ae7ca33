#!/usr/bin/env python3
"""A reference decoder for the plane codec (codec 5) and filter 2, written from
FORMAT.md §3.4, §3.4.1 and §3.10 alone, without looking at the Swift or C code.

Slow (pure Python) and meant for checking the specification: run it to decode
the golden BF16 blob of FORMAT.md §3.10.2 and the segment of §3.10.1.

    python3 scripts/plane_codec_reference.py
"""
from __future__ import annotations

import struct


def crc32c(data: bytes) -> int:
    """CRC32C, bit at a time (FORMAT.md §2)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def canonical_codes(lengths: dict[int, int]) -> dict[tuple[int, int], int]:
    """(code, length) -> symbol for deflate-style canonical codes; rejects incomplete codes."""
    if any(not 1 <= l <= 11 for l in lengths.values()):
        raise ValueError("code length outside 1...11")
    if sum(2 ** (11 - l) for l in lengths.values()) != 2 ** 11:
        raise ValueError("code lengths are not a complete prefix code")
    count = [0] * 12
    for l in lengths.values():
        count[l] += 1
    next_code = [0] * 12
    code = 0
    for bits in range(1, 12):
        code = (code + count[bits - 1]) << 1
        next_code[bits] = code
    table = {}
    for symbol in sorted(lengths):
        l = lengths[symbol]
        table[(next_code[l], l)] = symbol
        next_code[l] += 1
    return table


def decode_stream(stream: bytes, count: int, table: dict[tuple[int, int], int]) -> bytes:
    """Reads `count` codes, MSB of each code first, from an LSB-first bit stream."""
    bits = [(byte >> i) & 1 for byte in stream for i in range(8)]
    out = bytearray()
    pos = 0
    for _ in range(count):
        code, length = 0, 0
        while (code, length) not in table:
            if length == 11 or pos >= len(bits):
                raise ValueError("stream ends inside a code")
            code = (code << 1) | bits[pos]
            pos += 1
            length += 1
        out.append(table[(code, length)])
    if len(bits) - pos >= 8:
        raise ValueError("bytes left over in a stream")
    return bytes(out)


def decode_chunk_stream(stored: bytes, raw_length: int) -> bytes:
    """Segments (FORMAT.md §3.10) -> the chunk's filtered bytes."""
    out = bytearray()
    at = 0
    while at < len(stored):
        kind, length = struct.unpack_from("<BI", stored, at)
        at += 5
        if length == 0:
            raise ValueError("segment length 0")
        if kind == 0:
            body = stored[at:at + length]
            if len(body) != length:
                raise ValueError("raw segment runs past the stored bytes")
            out += body
            at += length
        elif kind == 1:
            if length > 1 << 20:
                raise ValueError("repeat longer than 2^20")
            out += bytes([stored[at]]) * length
            at += 1
        elif kind == 2:
            first, last = stored[at], stored[at + 1]
            if first > last:
                raise ValueError("first > last")
            span = last - first + 1
            nibbles = stored[at + 2:at + 2 + (span + 1) // 2]
            lengths = {}
            for j in range(span):
                l = (nibbles[j // 2] >> (4 * (j & 1))) & 15
                if l:
                    lengths[first + j] = l
            if first not in lengths or last not in lengths:
                raise ValueError("first or last symbol has no code")
            at += 2 + (span + 1) // 2
            sizes = struct.unpack_from("<4I", stored, at)
            at += 16
            table = canonical_codes(lengths)
            q = -(-length // 4)
            for k in range(4):
                count = max(0, min(length, (k + 1) * q) - min(length, k * q))
                stream = stored[at:at + sizes[k]]
                if len(stream) != sizes[k]:
                    raise ValueError("stream runs past the stored bytes")
                out += decode_stream(stream, count, table)
                at += sizes[k]
        else:
            raise ValueError(f"unknown segment kind {kind}")
    if len(out) != raw_length:
        raise ValueError("segments do not decode to the chunk's raw length")
    return bytes(out)


def unfilter(data: bytes, filter_id: int, size: int) -> bytes:
    """Inverse of filter 0, 1 (§3.4) or 2 (§3.4.1)."""
    if filter_id == 0:
        return data
    n = len(data) // size
    out = bytearray(data)
    for i in range(n):
        value = sum(data[k * n + i] << (8 * k) for k in range(size))
        if filter_id == 2:
            bits = 8 * size
            value = (value >> 1) | ((value & 1) << (bits - 1))
        out[i * size:(i + 1) * size] = value.to_bytes(size, "little")
    return bytes(out)


def decode_blob(blob: bytes) -> bytes:
    """Decodes a plain encoded blob (FORMAT.md §3) whose codec is none or planes."""
    magic, version, flags, header_length = struct.unpack_from("<IHHI", blob, 0)
    assert magic == 0x48424B43 and version == 1 and flags == 0
    assert crc32c(blob[:header_length - 4]) == struct.unpack_from("<I", blob, header_length - 4)[0]
    _dtype, codec, _level, filter_id, size, rank, name_length, attr_length = struct.unpack_from("<BBBBBBHI", blob, 12)
    raw_size, stored_size, chunk_size, chunk_count, raw_crc = struct.unpack_from("<QQQQI", blob, 24)
    table_at = 64 + 8 * rank + name_length + attr_length
    payload_at = header_length
    out = bytearray()
    for index in range(chunk_count):
        stored, crc = struct.unpack_from("<II", blob, table_at + 8 * index)
        chunk = blob[payload_at:payload_at + stored]
        assert crc32c(chunk) == crc, "chunk CRC32C"
        raw_length = min(chunk_size, raw_size - index * chunk_size)
        if stored == raw_length:
            out += chunk
        else:
            assert codec == 5, "this reference decodes codec 5 only"
            out += unfilter(decode_chunk_stream(chunk, raw_length), filter_id, size)
        payload_at += stored
    assert crc32c(bytes(out)) == raw_crc, "raw CRC32C"
    return bytes(out)


if __name__ == "__main__":
    segment = bytes.fromhex("020c0000007a7d2331" + "01000000" * 4 + "00390113")
    assert decode_chunk_stream(segment, 12) == bytes.fromhex("7c7c7c7b7c7d7b7c7c7a7c7b")
    golden = bytes.fromhex("""
        434b424801000000550000000705000202010100000000008000000000000000
        6f000000000000000000400000000000010000000000000031e5a8e500000000
        4000000000000000676f00000013888aeee38b5bfa0040000000f9e9d9c9b9a9
        99897969594939291909f1d1b19171513111e1a16121c1418101008040c02060
        a0e01030507090b0d0f008182838485868788898a8b8c8d8e8f8024000000078
        7d5534120200000006000000060000000200000000005555db76f71fefdf6d5b
        55150000""".replace("\n", "").replace(" ", ""))
    values = decode_blob(golden)
    floats = [struct.unpack("<f", b"\0\0" + values[2 * i:2 * i + 2])[0] for i in range(64)]
    assert floats == [(2 * i - 63) / 128 for i in range(64)], floats
    print("FORMAT.md §3.10.1 segment and §3.10.2 blob decode as specified")
