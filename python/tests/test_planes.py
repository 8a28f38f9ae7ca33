"""The byte-plane codec (FORMAT.md §3.10, codec 5) and the rotate + shuffle filter (§3.4.1): read from Python.

Golden bytes from FORMAT.md, every rejection of §3.10 on hand-made segments, and files the real
Swift `ckpt` writes with `--codec planes` / `--codec auto` (floats of every width with NaN payloads,
±0, subnormals, inf, all-equal and one-outlier tensors, random bytes), read bit-exact.
"""

from __future__ import annotations

import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import ckpt_container as cc
import ckpt_container._planes as planes_module
import ckpt_container.numpy
from ckpt_container import ContainerFile
from ckpt_container._codecs import CODECS, FILTER_ROTATE_SHUFFLE, apply_filter, unfilter
from ckpt_container._crc import crc32c
from ckpt_container._format import parse_blob_header
from ckpt_container._planes import _MAX_TABLES, PlaneError, _encode_piece, decode_chunks, encode_chunk, huffman_lengths
from ckpt_container.errors import CheckpointError, ChecksumError, CorruptFileError
from ckpt_container.numpy import load_file

from _support import needs_ckpt, run_ckpt, same_bits, write_safetensors_by_hand

# FORMAT.md §3.10.1: the 12 bytes 7c 7c 7c 7b 7c 7d 7b 7c 7c 7a 7c 7b as one Huffman segment.
SEGMENT_3_10_1 = bytes.fromhex("02" "0c000000" "7a7d" "2331" + "01000000" * 4 + "00390113")
DECODED_3_10_1 = bytes.fromhex("7c7c7c7b7c7d7b7c7c7a7c7b")


def format_md_hex_dump(heading: str) -> bytes:
    """The bytes of the first hex dump (``OFFSET    xx xx …`` lines) after ``heading`` in FORMAT.md."""
    text = (Path(__file__).resolve().parents[2] / "FORMAT.md").read_text()
    section = text[text.index(heading):]
    block = section[section.index("```") + 3:]
    block = block[:block.index("```")]
    out = bytearray()
    for line in block.strip().splitlines():
        offset, _, rest = line.partition("    ")
        assert int(offset, 16) == len(out), line
        out += bytes.fromhex(rest)
    return bytes(out)


# FORMAT.md §3.10.2: BF16 `g`, shape [64], values (2i − 63) / 128, codec 5, filter 2.
BLOB_3_10_2 = format_md_hex_dump("#### 3.10.2 Example: a BF16 blob")


def test_segment_of_format_md_3_10_1_decodes() -> None:
    assert decode_chunks([(memoryview(SEGMENT_3_10_1), 12)])[0].tobytes() == DECODED_3_10_1
    assert CODECS[5].decompress(memoryview(SEGMENT_3_10_1), 12) == DECODED_3_10_1


def test_bf16_blob_of_format_md_3_10_2_decodes() -> None:
    assert len(BLOB_3_10_2) == 196
    header = parse_blob_header(BLOB_3_10_2[:85])
    assert (header.codec, header.filter, header.element_size, header.raw_size) == (5, FILTER_ROTATE_SHUFFLE, 2, 128)
    assert header.chunks[0][0] == 111
    decoded = CODECS[5].decompress(memoryview(BLOB_3_10_2[85:]), 128)
    raw = unfilter(decoded, header.filter, header.element_size)
    expected = ((2 * np.arange(64) - 63) / 128).astype(ml_dtypes.bfloat16)
    assert raw.tobytes() == expected.tobytes()
    assert crc32c(raw) == header.raw_crc


def test_rotate_shuffle_inverse_of_format_md_3_4_1() -> None:
    # F32 −1.0 = 0xBF800000, rotated 0x7F000001: its planes hold 01 00 00 7F.
    out = unfilter(bytes([0x01, 0x00, 0x00, 0x7F]), FILTER_ROTATE_SHUFFLE, 4)
    assert out.view("<f4")[0] == -1.0
    rng = np.random.default_rng(3)
    for size, word in ((2, "<u2"), (4, "<u4"), (8, "<u8")):
        values = rng.integers(0, 256, 9 * size - 1, dtype=np.uint8)  # 8 elements; the trailing bytes stay
        elements = values[:8 * size].view(word)
        bits = 8 * size
        rotated = ((elements << np.array(1, dtype=word)) | (elements >> np.array(bits - 1, dtype=word))).astype(word)
        planes = rotated.view(np.uint8).reshape(8, size).T.reshape(-1)
        restored = unfilter(np.concatenate([planes, values[8 * size:]]).tobytes(), FILTER_ROTATE_SHUFFLE, size)
        assert restored.tobytes() == values.tobytes()


def segment(kind: int, length: int, body: bytes) -> bytes:
    return struct.pack("<BI", kind, length) + body


def huffman_body(first: int, last: int, nibbles: bytes, streams: list) -> bytes:
    return bytes([first, last]) + nibbles + struct.pack("<4I", *map(len, streams)) + b"".join(streams)


@pytest.mark.parametrize("stored, raw_length, message", [
    (SEGMENT_3_10_1[:-1], 12, "runs past"),                                    # a stream cut short
    (SEGMENT_3_10_1 + b"\x00", 12, "segment header runs past"),                # a byte after the last segment
    (SEGMENT_3_10_1, 13, "decode to 12 bytes"),                                # fewer bytes than the chunk
    (SEGMENT_3_10_1, 11, "more than"),                                         # more
    (segment(0, 0, b""), 1, "length 0"),
    (segment(7, 1, b"x"), 1, "unknown segment kind 7"),
    (segment(1, (1 << 20) + 1, b"\x05"), (1 << 20) + 1, "repeat segment"),
    (segment(1, 4, b""), 4, "runs past"),
    (segment(0, 4, b"abc"), 4, "runs past"),
    # lengths 1, 1, 1: not a prefix code; 2, 2: incomplete; 12: too long; first without a code
    (segment(2, 4, huffman_body(0, 2, b"\x11\x01", [b"", b"", b"", b""])), 4, "complete"),
    (segment(2, 4, huffman_body(0, 1, b"\x22", [b"", b"", b"", b""])), 4, "complete"),
    (segment(2, 4, huffman_body(0, 1, b"\x1c", [b"", b"", b"", b""])), 4, "exceeds 11"),
    (segment(2, 4, huffman_body(0, 2, b"\x10\x01", [b"", b"", b"", b""])), 4, "first or last"),
    (segment(2, 4, huffman_body(1, 0, b"", [b"", b"", b"", b""])), 4, "first > last"),
    (segment(2, 4, huffman_body(0, 2, b"\x21\xf2", [b"\x00"] * 4)), 4, "unused last"),
    # a stream with a whole byte after its last code, and one that ends inside a code
    (segment(2, 4, huffman_body(0, 1, b"\x11", [b"\x00\x00", b"\x00", b"\x00", b"\x00"])), 4, "bytes after"),
    # codes 0, 10, 11: stream 0 holds four 11s (8 bits) and must give five symbols
    (segment(2, 20, huffman_body(0, 2, b"\x21\x02", [b"\xff", b"\x00", b"\x00", b"\x00"])), 20, "inside a code"),
])
def test_every_rejection_of_format_md_3_10(stored: bytes, raw_length: int, message: str) -> None:
    with pytest.raises(PlaneError, match=message):
        decode_chunks([(memoryview(stored), raw_length)])
    with pytest.raises(CheckpointError):
        CODECS[5].decompress(memoryview(stored), raw_length)


def test_a_bad_chunk_is_named_by_its_position_in_the_batch() -> None:
    good = (memoryview(SEGMENT_3_10_1), 12)
    bad = (memoryview(SEGMENT_3_10_1[:-1]), 12)  # found while parsing
    with pytest.raises(PlaneError) as caught:
        decode_chunks([good, good, bad, good])
    assert caught.value.chunk == 2
    # found only by the lockstep decode: stream 0 of four 2-bit codes must give five symbols
    inside = segment(2, 20, huffman_body(0, 2, b"\x21\x02", [b"\xff", b"\x00", b"\x00", b"\x00"]))
    with pytest.raises(PlaneError, match="inside a code") as caught:
        decode_chunks([good, good, good, (memoryview(inside), 20), good])
    assert caught.value.chunk == 3


def test_more_distinct_codes_than_one_batch_holds(monkeypatch) -> None:
    # 600 Huffman segments, each with its own code (alphabets of 3…52 symbols starting at 0…220):
    # the decoder runs the lanes it has whenever a batch's tables are full, and the bytes still
    # come out right.
    pieces = [np.repeat(np.arange(i // 50 * 20, i // 50 * 20 + 3 + i % 50, dtype=np.uint8), np.arange(1, 4 + i % 50))
              for i in range(600)]
    chunk = b"".join(_encode_piece(piece) for piece in pieces)
    runs = []
    real = planes_module._decode_lanes
    monkeypatch.setattr(planes_module, "_decode_lanes", lambda *args: runs.append(1) or real(*args))
    expected = np.concatenate(pieces)
    assert decode_chunks([(memoryview(chunk), expected.size)])[0].tobytes() == expected.tobytes()
    assert len(runs) == -(-600 // _MAX_TABLES)  # one lockstep run per full batch of codes, and the rest


def test_raw_and_repeat_segments_and_many_streams_at_once() -> None:
    rng = np.random.default_rng(8)
    # Chunks of a raw, a repeat and a Huffman segment (the §3.10.1 one), many of them at once:
    # the lockstep decoder must keep each stream's output in its own place.
    raw = rng.integers(0, 256, 37, dtype=np.uint8).tobytes()
    chunk = segment(0, len(raw), raw) + segment(1, 5, b"\x09") + SEGMENT_3_10_1
    expected = raw + b"\x09" * 5 + DECODED_3_10_1
    outputs = decode_chunks([(memoryview(chunk), len(expected))] * 50)
    assert all(o.tobytes() == expected for o in outputs)


def test_huffman_lengths_are_complete_and_limited() -> None:
    rng = np.random.default_rng(2)
    for counts in (np.bincount(rng.integers(0, 256, 5000), minlength=256),
                   np.array([1 << 30] + [1] * 255),                     # one dominant symbol: lengths hit 11
                   np.array([3, 5] + [0] * 254), np.array([0] * 255 + [7])):
        lengths = huffman_lengths(counts)
        used = lengths[lengths > 0]
        if np.count_nonzero(counts) < 2:
            assert not used.size
            continue
        assert used.max() <= 11 and int(np.sum(1 << (11 - used))) == 1 << 11
        assert (lengths > 0).tolist() == (counts > 0).tolist()


def test_encoded_chunks_decode_to_their_input() -> None:
    rng = np.random.default_rng(6)
    normal = (rng.standard_normal(300_001) * 0.02).astype(np.float32)
    cases = [(normal.view(np.uint8), 4), (normal.astype(ml_dtypes.bfloat16).view(np.uint8), 2),
             (np.full(70_000, 9, dtype=np.uint8), 0), (rng.integers(0, 256, 100_000, dtype=np.uint8), 0),
             (np.array([1], dtype=np.uint8), 0), (normal.view(np.uint8)[:1003], 4)]
    for raw, size in cases:
        filtered = apply_filter(memoryview(raw), FILTER_ROTATE_SHUFFLE if size else 0, size) if size else raw
        stored = encode_chunk(filtered, size)
        assert decode_chunks([(memoryview(stored), raw.size)])[0].tobytes() == bytes(memoryview(filtered))
        assert unfilter(decode_chunks([(memoryview(stored), raw.size)])[0], FILTER_ROTATE_SHUFFLE if size else 0,
                        size).tobytes() == raw.tobytes()


@needs_ckpt
@pytest.mark.parametrize("codec, chunk", [("planes", "64K"), ("planes", "1M"), ("planes", "4M"), ("auto", None)])
def test_python_writer_matches_ckpt_convert_with_planes(tmp_path: Path, codec: str, chunk) -> None:
    """The Python writer makes the Swift writer's choices (sample, pieces, code lengths): same bytes.
    With 4 MiB chunks of 1.1M-element tensors a plane is cut into several 256 KiB pieces."""
    arrays = hard_floats(np.random.default_rng(13), 1_100_000 if chunk == "4M" else 200_000)
    source = tmp_path / "floats.safetensors"
    write_safetensors_by_hand(arrays, source)
    swift = tmp_path / "swift.ckpt"
    run_ckpt("convert", str(source), str(swift), "--codec", codec, *(["--chunk-size", chunk] if chunk else []))
    python = tmp_path / "python.ckpt"
    cc.numpy.save_file(arrays, python, codec=codec,
                       chunk_size=None if chunk is None else {"64K": 64 << 10, "1M": 1 << 20, "4M": 4 << 20}[chunk],
                       durability="none")
    assert python.read_bytes() == swift.read_bytes()
    assert run_ckpt("verify", str(python)).returncode == 0


def hard_floats(rng: np.random.Generator, n: int) -> dict:
    """Float tensors the plane codec must get bit-exact: trained-like values, special values, edge shapes."""
    normal = (rng.standard_normal(n) * 0.02).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        return _hard_floats(rng, n, normal)


def _hard_floats(rng: np.random.Generator, n: int, normal: np.ndarray) -> dict:
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 1e-40, 3.4e38], dtype=np.float32)
    nan_payloads = np.array([0x7FC00001, 0xFFC00002, 0x7F800001, 0xFFFFFFFF], dtype=np.uint32).view(np.float32)
    mixed = np.concatenate([normal, specials, nan_payloads])
    outlier = np.full(n, 0.01, dtype=np.float32)
    outlier[n // 3] = 1e30
    return {
        "f32": mixed, "f32.equal": np.full(n, 0.125, dtype=np.float32), "f32.outlier": outlier,
        "f32.random": rng.integers(0, 256, 4 * n, dtype=np.uint8).view(np.float32),
        "f64": mixed.astype(np.float64), "f16": mixed.astype(np.float16),
        "bf16": mixed.astype(ml_dtypes.bfloat16), "bf16.equal": np.full(n, -2.5, dtype=ml_dtypes.bfloat16),
        "f8_e4m3": normal.astype(ml_dtypes.float8_e4m3fn), "f8_e5m2": mixed.astype(ml_dtypes.float8_e5m2),
        "f32.odd": normal[:1001], "f32.one": normal[:1], "i32": rng.integers(-5, 5, n, dtype=np.int32),
    }


@needs_ckpt
@pytest.mark.parametrize("codec", ["planes", "auto"])
@pytest.mark.parametrize("chunk", ["64", "4K", "1M"])
def test_swift_plane_files_load_bit_exact(tmp_path: Path, codec: str, chunk: str) -> None:
    arrays = hard_floats(np.random.default_rng(21), 300_000)
    source = tmp_path / "floats.safetensors"
    write_safetensors_by_hand(arrays, source)
    out = tmp_path / "floats.ckpt"
    run_ckpt("convert", str(source), str(out), "--codec", codec, "--chunk-size", chunk)
    with ContainerFile(out) as f:
        codecs = {name: f.header(name).codec for name in f.names()}
    assert codecs["f32"] == 5 and codecs["bf16"] == 5  # the plane codec is really in the file
    loaded = load_file(out)  # the plane blobs decoded together (decode_planes)
    for name, array in arrays.items():
        assert same_bits(loaded[name], array), name
    with cc.safe_open(out) as f:  # one blob at a time
        for name in ("bf16", "f32.outlier", "f8_e5m2"):
            assert same_bits(f.get_tensor(name), arrays[name]), name
    with ContainerFile(out) as f:
        assert all(error is None for error in f.verify().values())
    if chunk == "4K":  # the recovery walk decodes every chunk of every record
        report = cc.scan(out)
        assert report.damaged_records == [] and sorted(report.blob_names) == sorted(arrays)


@needs_ckpt
def test_damage_in_a_plane_payload_is_reported(tmp_path: Path) -> None:
    arrays = {"w": (np.random.default_rng(4).standard_normal(200_000) * 0.02).astype(ml_dtypes.bfloat16)}
    source = tmp_path / "w.safetensors"
    write_safetensors_by_hand(arrays, source)
    out = tmp_path / "w.ckpt"
    run_ckpt("convert", str(source), str(out), "--codec", "planes", "--chunk-size", "64K")
    with ContainerFile(out) as f:
        entry = f.entry("w")
        header = f.header("w")
        assert header.codec == 5 and header.chunks[0][0] < header.chunk_raw_length(0)
        payload = bytes(f.payload("w"))
    # Chunk 0's first Huffman segment: its first stream now claims more bytes than the chunk has.
    at = 0
    while payload[at] != 2:
        at += 5 + (int.from_bytes(payload[at + 1:at + 5], "little") if payload[at] == 0 else 1)
    first, last = payload[at + 5], payload[at + 6]
    sizes_at = entry.payload_offset + at + 5 + 2 + (last - first + 2) // 2
    data = bytearray(out.read_bytes())
    data[sizes_at:sizes_at + 4] = (1 << 30).to_bytes(4, "little")
    out.write_bytes(bytes(data))
    with ContainerFile(out) as f:
        with pytest.raises(ChecksumError):  # the chunk's stored CRC32C first
            f.array("w")
        with pytest.raises(CorruptFileError, match="chunk 0: plane codec: a Huffman stream runs past") as caught:
            f.array("w", verify=False)
        assert caught.value.blob == "w" and caught.value.offset == entry.payload_offset
        with pytest.raises(CorruptFileError, match="chunk 0"):
            f.decode_planes(["w"], verify=False)


@needs_ckpt
def test_decode_planes_refuses_a_blob_over_the_raw_size_limit(tmp_path: Path) -> None:
    arrays = {"w": np.zeros(300_000, dtype=np.float32)}
    source = tmp_path / "w.safetensors"
    write_safetensors_by_hand(arrays, source)
    out = tmp_path / "w.ckpt"
    run_ckpt("convert", str(source), str(out), "--codec", "planes")
    with ContainerFile(out) as f:
        f.max_raw_size = 1 << 20
        with pytest.raises(CheckpointError, match="exceeds the limit"):
            f.decode_planes(["w"])
        assert f._planes == {}
        f.max_raw_size = 64 << 30
        f.decode_planes(["w"])
        assert same_bits(f.array("w"), arrays["w"]) and f._planes == {}
