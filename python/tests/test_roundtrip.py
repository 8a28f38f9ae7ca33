"""Round trips through the Python writer and reader: every dtype × codec × shuffle, chunk edges,
zero-copy views, slices, appends, deletions, newest-record-wins, atomicity and the writer lock."""

import os

import ml_dtypes
import numpy as np
import pytest

import ckpt_container as cc
from ckpt_container import ContainerFile, ContainerWriter, EncodeOptions, safe_open
from ckpt_container.numpy import load, load_file, save, save_file

from _support import all_dtype_arrays, same_bits

CODECS = ["none", "lz4", "lz4hc-4", "zlib-1", "zstd-1", "zstd-19"]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("shuffle", ["auto", "on", "off"])
def test_every_dtype_every_codec_and_shuffle(tmp_path, codec: str, shuffle: str) -> None:
    arrays = all_dtype_arrays(np.random.default_rng(7))
    arrays["strings"] = np.array([["", "α"], ["héllo", "x" * 300]], dtype=object)
    path = tmp_path / "all.ckpt"
    save_file(arrays, path, {"k": "v"}, codec=codec, shuffle=shuffle, chunk_size=64, durability="none")
    loaded = load_file(path)
    assert sorted(loaded) == sorted(arrays)
    for name, array in arrays.items():
        assert same_bits(loaded[name], array), name
        assert loaded[name].flags.writeable and loaded[name].flags.owndata or loaded[name].base is not None
    with safe_open(path) as f:
        assert f.metadata() == {"k": "v"}
        for name in f.keys():
            header = f.file.header(name)
            if codec == "none":
                assert header.filter == 0 and header.stored_raw
            if shuffle == "off" or codec == "none":
                assert header.filter == 0
            elif name == "u32" and shuffle == "on":
                assert header.filter == 1 and header.element_size == 4
            elif name == "c128":
                assert header.filter == 1 and header.element_size == 8


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 63, 64, 65, 1000])
@pytest.mark.parametrize("codec", ["none", "lz4", "zstd-3"])
def test_chunk_edges(tmp_path, size: int, codec: str) -> None:
    rng = np.random.default_rng(size)
    data = {"zeros": np.zeros(size, np.uint8), "noise": rng.integers(0, 256, size, dtype=np.uint8),
            "ramp": (np.arange(size) % 7).astype(np.uint8)}
    path = tmp_path / "edges.ckpt"
    save_file(data, path, codec=codec, chunk_size=16, durability="none")
    loaded = load_file(path)
    for name, array in data.items():
        assert same_bits(loaded[name], array)
        header = ContainerFile(path).header(name)
        assert len(header.chunks) == (size + 15) // 16


def test_seeded_random_shapes_and_codecs(tmp_path) -> None:
    rng = np.random.default_rng(2024)
    for round in range(12):
        dtype = rng.choice([np.float32, np.float16, ml_dtypes.bfloat16, np.int64, np.uint8, np.complex64])
        shape = tuple(int(d) for d in rng.integers(0, 40, rng.integers(0, 4)))
        array = (rng.standard_normal(shape) * 3).astype(dtype)
        codec = str(rng.choice(CODECS))
        chunk = int(rng.choice([16, 48, 4096, 4 << 20]))
        path = tmp_path / f"r{round}.ckpt"
        save_file({"t": array}, path, codec=codec, chunk_size=chunk, durability="none")
        assert same_bits(load_file(path)["t"], array), (dtype, shape, codec, chunk)


def test_uncompressed_tensors_are_read_only_zero_copy_views(tmp_path) -> None:
    array = np.arange(1 << 16, dtype=np.float32)
    path = tmp_path / "v.ckpt"
    save_file({"a": array, "z": array}, path, durability="none")
    with safe_open(path) as f:
        view = f.get_tensor("a")
        assert not view.flags.writeable and not view.flags.owndata
        assert (view.__array_interface__["data"][0] % 64) == 0  # payloads are 64-byte aligned
        with pytest.raises(ValueError):
            view[0] = 1
        assert same_bits(view, array)
    assert same_bits(view, array)  # the mapping outlives the closed file while a view exists


def test_compressed_tensors_decode_into_fresh_arrays(tmp_path) -> None:
    array = np.zeros(1 << 16, dtype=np.float32)
    path = tmp_path / "c.ckpt"
    save_file({"a": array}, path, codec="zstd", durability="none")
    with safe_open(path) as f:
        assert f.file.header("a").stored_size < array.nbytes
        out = f.get_tensor("a")
        assert out.flags.writeable and same_bits(out, array)
        with pytest.raises(cc.NotViewableError, match="'a'"):
            f.file.raw_view("a")


def test_get_slice(tmp_path) -> None:
    array = np.arange(64 * 100, dtype=np.int32).reshape(64, 100)
    path = tmp_path / "s.ckpt"
    for codec in ("none", "lz4"):
        save_file({"m": array}, path, codec=codec, chunk_size=1024, durability="none")
        with safe_open(path) as f:
            s = f.get_slice("m")
            assert s.get_shape() == [64, 100] and s.get_dtype() == "I32"
            assert same_bits(s[3:5], array[3:5])
            assert same_bits(s[:, 7], np.ascontiguousarray(array[:, 7]))
            assert same_bits(s[10:20, 50:], np.ascontiguousarray(array[10:20, 50:]))


def test_slice_checks_only_the_chunks_it_touches(tmp_path) -> None:
    array = np.arange(4096, dtype=np.uint8)
    path = tmp_path / "s.ckpt"
    save_file({"m": array}, path, chunk_size=1024, durability="none")
    payload = ContainerFile(path).entry("m").payload_offset
    data = bytearray(path.read_bytes())
    data[payload + 3000] ^= 1  # chunk 2
    path.write_bytes(bytes(data))
    with safe_open(path) as f:
        assert same_bits(f.get_slice("m")[:1024], array[:1024])
        with pytest.raises(cc.ChecksumError, match=r"blob 'm': offset \d+: chunk 2 CRC32C mismatch"):
            f.get_slice("m")[2500:2600]
    with safe_open(path, verify=False) as f:
        assert f.get_slice("m")[2500:2600].size == 100  # the opt-out reads damaged bytes as they are


def test_bytes_and_strings(tmp_path) -> None:
    path = tmp_path / "b.ckpt"
    save_file({"blob": b"\x00\xffabc", "names": np.array(["a", "", "ü"])}, path, durability="none")
    with ContainerFile(path) as f:
        assert f.dtype_name("blob") == "RAW" and f.dtype_name("names") == "STRING"
        assert f.array("blob").tobytes() == b"\x00\xffabc"
        assert f.array("names").tolist() == ["a", "", "ü"]


def test_save_and_load_bytes() -> None:
    data = save({"x": np.ones(3, np.float64)}, {"m": "1"}, codec="lz4")
    assert data[:8] == b"\x89CKPT\r\n\x1a"
    assert same_bits(load(data)["x"], np.ones(3, np.float64))


def test_appends_deletions_and_newest_record_wins(tmp_path) -> None:
    path = tmp_path / "log.ckpt"
    save_file({"a": np.zeros(10, np.int32), "b": np.ones(10, np.int32)}, path, {"epoch": "0"}, durability="none")
    with ContainerWriter.append(path, durability="data") as w:
        assert w.names == ["a", "b"] and w.metadata == {"epoch": "0"}
        w.write("a", np.full(10, 7, np.int32))
        w.write("c", np.arange(3, dtype=np.float32), options=EncodeOptions(codec="zstd"))
        w.delete("b")
        w.metadata["epoch"] = "1"
    with ContainerFile(path) as f:
        assert f.names() == ["a", "c"] and f.generation == 2 and f.metadata == {"epoch": "1"}
        assert f.array("a").tolist() == [7] * 10
    with ContainerWriter.append(path, durability="none") as w:
        with pytest.raises(cc.BlobNotFoundError):
            w.delete("b")
        w.write("b", np.array([5], np.int8))
        w.write("b", np.array([6], np.int8))  # twice in one commit: the newer wins
    loaded = load_file(path)
    assert loaded["b"].tolist() == [6] and loaded["a"].tolist() == [7] * 10
    report = cc.scan(path)
    assert report.keeps_everything and report.blob_names == ["a", "b", "c"] and report.base_generation == 3


def test_failed_save_leaves_previous_file_and_no_temporary(tmp_path) -> None:
    path = tmp_path / "m.ckpt"
    save_file({"a": np.zeros(4, np.float32)}, path)
    before = path.read_bytes()
    with pytest.raises(cc.CheckpointError, match="no container dtype"):
        save_file({"a": np.zeros(4, np.float32), "z": np.zeros(2, dtype="datetime64[s]")}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt"]


def test_writer_lock_excludes_a_second_writer(tmp_path) -> None:
    path = tmp_path / "m.ckpt"
    first = ContainerWriter.create(path, durability="none")
    with pytest.raises(cc.WriterLockedError, match="another writer holds the lock"):
        ContainerWriter.create(path)
    first.write("a", np.zeros(1, np.uint8))
    first.commit()
    ContainerWriter.create(path).abort()  # free again


def test_bad_options_and_inputs_raise_clear_errors(tmp_path) -> None:
    path = tmp_path / "m.ckpt"
    with pytest.raises(cc.CheckpointError, match="unknown codec"):
        save_file({"a": np.zeros(1)}, path, codec="brotli")
    with pytest.raises(cc.CheckpointError, match="level 30"):
        save_file({"a": np.zeros(1)}, path, codec="zstd", level=30)
    with pytest.raises(cc.CheckpointError, match="chunk size"):
        save_file({"a": np.zeros(1)}, path, chunk_size=17)
    with pytest.raises(cc.CheckpointError, match="NUL"):
        save_file({"a\x00b": np.zeros(1)}, path)
    with pytest.raises(cc.CheckpointError, match="do not fill whole bytes"):
        save_file({"f4": np.zeros(3, ml_dtypes.float4_e2m1fn)}, path)
    assert not os.path.exists(path)


def test_big_endian_and_non_contiguous_inputs(tmp_path) -> None:
    base = np.arange(24, dtype=">f4").reshape(4, 6)
    path = tmp_path / "m.ckpt"
    save_file({"be": base, "t": base.T}, path, durability="none")
    loaded = load_file(path)
    assert loaded["be"].dtype == np.dtype("<f4") and np.array_equal(loaded["be"], base)
    assert np.array_equal(loaded["t"], base.T)


def test_top_level_load_and_save(tmp_path) -> None:
    path = tmp_path / "m.ckpt"
    cc.save_file({"a": np.arange(3)}, path, codec="lz4")
    assert cc.load_file(path)["a"].tolist() == [0, 1, 2]


def test_the_empty_name_is_a_name_like_any_other(tmp_path) -> None:
    """FORMAT.md §3.2: name_length 0 is allowed (safetensors and numpy allow it)."""
    path = tmp_path / "e.ckpt"
    save_file({"": np.arange(3, dtype=np.int16), "b": np.ones(2, np.int8)}, path, codec="lz4", durability="none")
    with ContainerFile(path) as f:
        assert f.names() == ["", "b"]
        assert f.array("").tolist() == [0, 1, 2]
    with ContainerWriter.append(path, durability="none") as w:
        w.delete("")
    assert ContainerFile(path).names() == ["b"]
