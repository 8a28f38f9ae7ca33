"""Damage: every flipped byte is detected, truncation behaves as FORMAT.md §4.8 says,
hostile sizes raise before anything large is allocated."""

import os
import struct
import tracemalloc

import numpy as np
import pytest

import ckpt_container as cc
from ckpt_container import ContainerFile, ContainerWriter
from ckpt_container._crc import crc32c
from ckpt_container._format import BlobHeader, encode_blob_header, parse_blob_header
from ckpt_container.numpy import load_file, save_file


def small_file(path) -> bytes:
    save_file({"a": np.arange(40, dtype=np.float32), "b": np.zeros(300, np.int16), "c": np.array(["x", "yz"])},
              path, {"epoch": "1"}, codec="zstd", chunk_size=64, durability="none")
    return path.read_bytes()


def open_and_verify_all(path) -> None:
    with ContainerFile(path) as f:
        for name, error in f.verify().items():
            if error is not None:
                raise error


def test_every_flipped_byte_is_detected(tmp_path) -> None:
    path = tmp_path / "f.ckpt"
    original = small_file(path)
    missed = []
    for position in range(len(original)):
        damaged = bytearray(original)
        damaged[position] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            open_and_verify_all(path)
            missed.append(position)
        except cc.CheckpointError as error:
            assert str(path) in str(error)
    assert missed == [], f"undetected flips at {missed}"


def test_flipped_payload_byte_names_blob_chunk_and_offset(tmp_path) -> None:
    path = tmp_path / "p.ckpt"
    save_file({"weights": np.arange(1000, dtype=np.float32)}, path, chunk_size=1024, durability="none")
    entry = ContainerFile(path).entry("weights")
    data = bytearray(path.read_bytes())
    data[entry.payload_offset + 2048 + 5] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(cc.ChecksumError) as caught:
        load_file(path)
    error = caught.value
    assert error.blob == "weights" and error.path == str(path) and error.offset == entry.payload_offset + 2048
    assert "chunk 2 CRC32C mismatch" in str(error)
    assert load_file(path, verify=False)["weights"].size == 1000  # the opt-out
    with cc.safe_open(path) as f:
        with pytest.raises(cc.ChecksumError, match="'weights'"):
            f.get_tensor("weights")


def test_truncation_at_every_length_opens_the_last_complete_commit_or_raises(tmp_path) -> None:
    path = tmp_path / "t.ckpt"
    save_file({"a": np.arange(10, dtype=np.int64)}, path, durability="none")
    first_commit = path.stat().st_size
    with ContainerWriter.append(path, durability="none") as w:
        w.write("b", np.arange(5, dtype=np.int8))
        w.delete("a")
    full = path.read_bytes()
    for length in range(len(full) + 1):
        path.write_bytes(full[:length])
        if length < first_commit:
            with pytest.raises(cc.CorruptFileError):  # TornFileError or a cut structure
                ContainerFile(path)
            continue
        with ContainerFile(path) as f:
            if length == len(full):
                assert f.names() == ["b"] and f.generation == 2 and f.torn_bytes == 0
            else:
                assert f.names() == ["a"] and f.generation == 1 and f.torn_bytes == length - first_commit
                assert f.array("a").tolist() == list(range(10))


def test_torn_append_is_cut_back_by_the_next_appender_and_repair(tmp_path) -> None:
    path = tmp_path / "t.ckpt"
    save_file({"a": np.arange(10, dtype=np.int64)}, path, durability="none")
    first_commit = path.stat().st_size
    with ContainerWriter.append(path, durability="none") as w:
        w.write("b", np.arange(5, dtype=np.int8))
    full = path.read_bytes()
    path.write_bytes(full[:len(full) - 30])  # the new trailer is torn; the record of "b" is complete
    report = cc.scan(path)
    assert report.base_generation == 1 and report.blob_names == ["a", "b"] and report.keeps_everything
    cc.repair(path)
    with ContainerFile(path) as f:
        assert f.names() == ["a", "b"] and f.generation == 2 and f.torn_bytes == 0  # highest seen (1) + 1
    path.write_bytes(full[:len(full) - 30])
    with ContainerWriter.append(path, durability="none") as w:  # cuts the torn tail first
        assert w.names == ["a"]
        w.write("c", np.zeros(1, np.uint8))
    with ContainerFile(path) as f:
        assert f.names() == ["a", "c"] and f.generation == 2
    assert path.stat().st_size > first_commit


def test_repair_drops_a_damaged_committed_blob_and_keeps_the_rest(tmp_path) -> None:
    path = tmp_path / "r.ckpt"
    save_file({"good": np.arange(100, dtype=np.int32), "bad": np.arange(100, dtype=np.int32)}, path,
              durability="none")
    entry = ContainerFile(path).entry("bad")
    data = bytearray(path.read_bytes())
    data[entry.payload_offset + 1] ^= 0xFF
    path.write_bytes(bytes(data))
    report = cc.repair(path)
    assert report.lost_blobs == ["bad"] and [d.name for d in report.damaged_records] == ["bad"]
    assert ContainerFile(path).names() == ["good"]


def test_an_intact_last_trailer_with_a_bad_index_is_rejected_not_skipped(tmp_path) -> None:
    path = tmp_path / "i.ckpt"
    small_file(path)
    data = bytearray(path.read_bytes())
    trailer = len(data) - 64
    index_offset = struct.unpack_from("<Q", data, trailer + 8)[0]
    data[index_offset + 32 + 20] ^= 1  # inside the index body
    path.write_bytes(bytes(data))
    with pytest.raises(cc.ChecksumError, match="index body"):
        ContainerFile(path)


def forged_header(**fields) -> bytes:
    """A blob header with the given fields, its CRC made valid (so the structural checks are reached)."""
    h = BlobHeader(10, 0, 0, 0, 0, (4,), "w", {}, 16, 16, 16, 0, [(16, 0)])
    for key, value in fields.items():
        setattr(h, key, value)
    return encode_blob_header(h)


@pytest.mark.parametrize("fields, message", [
    (dict(shape=(1 << 60,), raw_size=1 << 62, stored_size=16, chunk_size=1 << 30, chunks=[(16, 0)]), "chunk count"),
    (dict(shape=(1 << 40, 1 << 40), raw_size=16), "more than 2\\^63-1"),
    (dict(raw_size=(1 << 63) + 1), "exceeds 2\\^63-1"),
    (dict(codec=4, level=3, shape=(1 << 18,), raw_size=1 << 20, stored_size=8, chunk_size=1 << 20, chunks=[(8, 0)]),
     "cannot expand"),
    (dict(codec=0, stored_size=8, chunks=[(8, 0)]), "with no compression"),
    (dict(chunks=[(17, 0)], stored_size=17), "exceeds its raw length"),
    (dict(dtype=99), "unknown dtype id 99"),
    (dict(codec=9), "unknown codec id 9"),
    (dict(filter=1, element_size=4), "shuffle filter without compression"),
    (dict(shape=(5,)), "raw size 16, but F32"),
])
def test_hostile_blob_headers_raise_before_allocating(fields, message) -> None:
    data = forged_header(**fields)
    tracemalloc.start()
    try:
        with pytest.raises(cc.CheckpointError, match=message):
            parse_blob_header(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_hostile_file_sizes_raise_before_allocating(tmp_path) -> None:
    path = tmp_path / "h.ckpt"
    small_file(path)
    data = bytearray(path.read_bytes())
    trailer = len(data) - 64
    # An index length of 2^62, the trailer's CRC made valid: it no longer ends where the trailer starts.
    struct.pack_into("<Q", data, trailer + 16, 1 << 62)
    struct.pack_into("<I", data, trailer + 56, crc32c(bytes(data[trailer:trailer + 56])))
    path.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with pytest.raises(cc.TornFileError):
            ContainerFile(path)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def test_non_regular_files_and_garbage_are_refused(tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(cc.CheckpointError, match="not a regular file"):
        ContainerFile(fifo)
    junk = tmp_path / "junk"
    junk.write_bytes(b"x" * 500)
    with pytest.raises(cc.CorruptFileError, match="bad file magic"):
        ContainerFile(junk)
    short = tmp_path / "short"
    short.write_bytes(b"\x89CKPT\r\n\x1a")
    with pytest.raises(cc.TornFileError, match="shorter than a file header and a trailer"):
        ContainerFile(short)


def test_decoding_allocation_is_capped_and_damage_is_found_before_allocating(tmp_path) -> None:
    path = tmp_path / "z.ckpt"
    save_file({"zeros": np.zeros(1 << 20, np.uint8)}, path, codec="zstd", durability="none")
    with ContainerFile(path) as f:
        assert f.header("zeros").stored_size < 1000
        f.max_raw_size = 1 << 19
        with pytest.raises(cc.CheckpointError, match="exceeds the limit"):
            f.array("zeros")
    entry = ContainerFile(path).entry("zeros")
    data = bytearray(path.read_bytes())
    data[entry.payload_offset + 3] ^= 1
    path.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with pytest.raises(cc.ChecksumError, match="chunk 0"):
            load_file(path)
        assert tracemalloc.get_traced_memory()[1] < 1 << 19  # the 1 MiB output was never allocated
    finally:
        tracemalloc.stop()


def rewrite_index(path, patch) -> None:
    """Applies ``patch(body)`` to the index body of ``path`` and makes the frame's and trailer's CRCs match
    (a valid file from a writer that knows more than this reader)."""
    data = bytearray(path.read_bytes())
    trailer = len(data) - 64
    index_offset = struct.unpack_from("<Q", data, trailer + 8)[0]
    body_offset = index_offset + 32
    body = bytearray(data[body_offset:trailer])
    length = struct.unpack_from("<Q", data, index_offset + 16)[0]
    body = body[:length]
    patch(body)
    data[body_offset:body_offset + length] = body
    crc = crc32c(bytes(body))
    struct.pack_into("<I", data, index_offset + 24, crc)
    struct.pack_into("<I", data, index_offset + 28, crc32c(bytes(data[index_offset:index_offset + 28])))
    struct.pack_into("<I", data, trailer + 40, crc)
    struct.pack_into("<I", data, trailer + 56, crc32c(bytes(data[trailer:trailer + 56])))
    path.write_bytes(bytes(data))


def test_an_index_entry_of_an_unknown_kind_makes_only_that_blob_unreadable(tmp_path) -> None:
    path = tmp_path / "k.ckpt"
    save_file({"a": np.arange(3, dtype=np.int8), "b": np.arange(4, dtype=np.int8)}, path, durability="none")
    rewrite_index(path, lambda body: body.__setitem__(32 + 64 * 1 + 50, 3))  # entry 1 ("b"): a blob reference
    with ContainerFile(path) as f:
        assert f.names() == ["a", "b"]
        assert f.array("a").tolist() == [0, 1, 2]
        with pytest.raises(cc.UnsupportedError, match="blob 'b'.*unsupported record kind 3"):
            f.array("b")
    with pytest.raises(cc.UnsupportedError, match="cannot append"):
        ContainerWriter.append(path)


def test_an_unknown_codec_id_makes_only_that_blob_unreadable(tmp_path) -> None:
    path = tmp_path / "u.ckpt"
    save_file({"a": np.arange(3, dtype=np.int8), "b": np.zeros(64, dtype=np.int8)}, path, codec="zstd",
              durability="none")
    rewrite_index(path, lambda body: body.__setitem__(32 + 64 * 1 + 52, 7))  # entry 1: codec id 7
    with ContainerFile(path) as f:
        assert f.array("a").tolist() == [0, 1, 2]
        with pytest.raises(cc.UnsupportedError, match="blob 'b'.*unknown codec id 7"):
            f.array("b")


@pytest.mark.parametrize("codec, mangle, message", [
    ("zlib", lambda s: bytes([s[0], (s[1] | 0x20) + (31 - ((s[0] * 256 + (s[1] | 0x20)) % 31)) % 31]) + s[2:],
     "preset dictionary"),
    ("zstd", lambda s: b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"skip" + s, "not a Zstandard frame"),
    ("zstd", lambda s: s + b"\x50\x2a\x4d\x18" + (0).to_bytes(4, "little"), "bytes after the zstd frame"),
])
def test_chunks_must_be_self_contained_single_streams(codec, mangle, message) -> None:
    """FORMAT.md §3.5: no zlib FDICT, no zstd dictionary, exactly one zstd frame (no skippable frames)."""
    from ckpt_container._codecs import CODECS_BY_NAME
    c = CODECS_BY_NAME[codec]
    raw = bytes(1000)
    stored = mangle(c.compress(memoryview(raw), 1))
    with pytest.raises(cc.CorruptFileError, match=message):
        c.decompress(memoryview(stored), len(raw))


def test_zstd_frame_naming_a_dictionary_is_rejected() -> None:
    import zstandard
    from ckpt_container._codecs import CODECS_BY_NAME
    samples = [(f"record {i} name=w{i % 7} shape=[{i % 13},{i % 5}] " * 8).encode() for i in range(2000)]
    dictionary = zstandard.train_dictionary(4096, samples)
    stored = zstandard.ZstdCompressor(dict_data=dictionary, write_content_size=True).compress(samples[3])
    assert zstandard.get_frame_parameters(stored).dict_id == dictionary.dict_id() != 0
    with pytest.raises(cc.CorruptFileError, match="names dictionary"):
        CODECS_BY_NAME["zstd"].decompress(memoryview(stored), len(samples[3]))
