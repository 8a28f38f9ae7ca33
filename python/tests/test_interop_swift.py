"""Interop with the real Swift implementation (the `ckpt` CLI and `checkpoint-stress`), both ways.

Skipped, with the reason, when the Swift binaries are not built (`swift build` at the repository root,
or CKPT_BIN / CKPT_STRESS_BIN pointing at them).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

import ckpt_container as cc
from ckpt_container import ContainerFile, ContainerWriter
from ckpt_container.numpy import load_file, save_file

from _support import (STRESS_BIN, all_dtype_arrays, needs_ckpt, run_ckpt, same_bits, transformer_like,
                      write_safetensors_by_hand)

pytestmark = needs_ckpt

CODEC_MATRIX = [("none", "auto")] + [(c, s) for c in ("lz4", "lz4hc", "zlib", "zstd") for s in ("auto", "on", "off")]


def codec_arguments(codec: str, shuffle: str) -> list[str]:
    """`ckpt convert` options for a codec and shuffle mode (ckpt refuses --shuffle without a codec)."""
    return ["--codec", codec] + ([] if codec == "none" else ["--shuffle", shuffle])
@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A transformer-shaped model with numpy's dtypes, written by the real safetensors library."""
    rng = np.random.default_rng(11)
    tensors = transformer_like(rng)
    for name, array in all_dtype_arrays(rng).items():
        if array.dtype in (np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.float16, np.uint32, np.int32,
                           np.float32, np.uint64, np.int64, np.float64, np.complex64):
            tensors["extra." + name] = array
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    safetensors.numpy.save_file(tensors, str(path), metadata={"format": "np", "source": "test"})
    return path


@pytest.fixture(scope="module")
def exotic(tmp_path_factory) -> Path:
    """bf16, fp8 (all five), fp6 and fp4 tensors in a safetensors file."""
    arrays = {k: v for k, v in all_dtype_arrays(np.random.default_rng(5)).items()
              if k.startswith(("bf16", "f8", "f6", "f4"))}
    path = tmp_path_factory.mktemp("exotic") / "exotic.safetensors"
    write_safetensors_by_hand(arrays, path)
    return path


@pytest.mark.parametrize("codec, shuffle", CODEC_MATRIX)
def test_swift_converted_model_loads_bit_exact(tmp_path, model: Path, codec: str, shuffle: str) -> None:
    out = tmp_path / "model.ckpt"
    run_ckpt("convert", str(model), str(out), *codec_arguments(codec, shuffle), "--chunk-size", "16K")
    expected = safetensors.numpy.load_file(str(model))
    loaded = load_file(out)
    assert sorted(loaded) == sorted(expected)
    for name, array in expected.items():
        assert same_bits(loaded[name], array), name
    with cc.safe_open(out) as f:
        assert f.metadata() == {"format": "np", "source": "test"}
        for name in f.keys():
            assert same_bits(f.get_tensor(name), expected[name])


@pytest.mark.parametrize("codec", ["none", "lz4", "zstd"])
def test_swift_converted_exotic_dtypes_load_bit_exact(tmp_path, exotic: Path, codec: str) -> None:
    out = tmp_path / "exotic.ckpt"
    run_ckpt("convert", str(exotic), str(out), "--codec", codec, "--chunk-size", "64")
    arrays = {k: v for k, v in all_dtype_arrays(np.random.default_rng(5)).items()
              if k.startswith(("bf16", "f8", "f6", "f4"))}
    loaded = load_file(out)
    for name, array in arrays.items():
        assert same_bits(loaded[name], array), name


@pytest.mark.parametrize("codec, shuffle", CODEC_MATRIX)
def test_python_writer_matches_ckpt_convert(tmp_path, model: Path, codec: str, shuffle: str) -> None:
    """Same options, same bytes: the Swift file and the Python file are compared byte for byte.

    One documented exception: LZ4 (fast). The `lz4` wheel's LZ4_compress_fast finds other matches than
    Debian's liblz4 1.9.4 on the same input (both are valid blocks that decode to the same bytes), so
    chunk sizes differ; the layout, filters, raw CRCs and decoded bytes are checked instead.
    """
    swift = tmp_path / "swift.ckpt"
    run_ckpt("convert", str(model), str(swift), *codec_arguments(codec, shuffle), "--chunk-size", "16K")
    python = tmp_path / "python.ckpt"
    with safetensors.safe_open(str(model), framework="np") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
        metadata = f.metadata()
    save_file(tensors, python, metadata, codec=codec, shuffle=shuffle, chunk_size=16 << 10, durability="none")
    if codec != "lz4":
        assert swift.read_bytes() == python.read_bytes()
        return
    with ContainerFile(swift) as s, ContainerFile(python) as p:
        assert s.names() == p.names() and s.metadata == p.metadata
        for name in s.names():
            hs, hp = s.header(name), p.header(name)
            assert (hs.raw_crc, hs.filter, hs.element_size, hs.chunk_size, hs.codec, len(hs.chunks)) == \
                   (hp.raw_crc, hp.filter, hp.element_size, hp.chunk_size, hp.codec, len(hp.chunks))
            assert same_bits(s.array(name), p.array(name))


@pytest.mark.parametrize("codec, shuffle", CODEC_MATRIX)
def test_python_files_pass_ckpt_verify_and_load_in_swift_bit_exact(tmp_path, codec: str, shuffle: str) -> None:
    arrays = all_dtype_arrays(np.random.default_rng(3))
    arrays["strings"] = np.array(["α", "", "β" * 100], dtype=object)
    arrays["raw"] = np.frombuffer(b"\x00\x01\x02 raw bytes", dtype=np.uint8)
    path = tmp_path / "py.ckpt"
    save_file({k: (v.tobytes() if k == "raw" else v) for k, v in arrays.items()}, path, {"epoch": "9"},
              codec=codec, shuffle=shuffle, chunk_size=64)
    result = run_ckpt("verify", str(path))
    assert "all checksums hold" in result.stdout
    inspected = json.loads(run_ckpt("inspect", str(path), "--json").stdout)
    assert inspected["metadata"] == {"epoch": "9"}
    by_name = {b["name"]: b for b in inspected["blobs"]}
    with ContainerFile(path) as f:
        for name in f.names():
            assert by_name[name]["dtype"] == f.dtype_name(name)
            assert tuple(by_name[name]["shape"]) == f.shape(name)
    # Swift decodes every blob (checking every CRC) and writes it back uncompressed; Python reads that.
    back = tmp_path / "back.ckpt"
    run_ckpt("convert", str(path), str(back))
    loaded = load_file(back)
    for name, array in arrays.items():
        assert same_bits(loaded[name], array), name
    # And through safetensors (the real library) for the dtypes it has.
    subset = [n for n in arrays if n not in ("strings", "raw", "c128", "scalar", "empty")
              and not n.startswith(("bf16", "f8", "f6", "f4"))]
    st = tmp_path / "back.safetensors"
    run_ckpt("extract", str(path), *subset, "-o", str(st))
    for name, array in safetensors.numpy.load_file(str(st)).items():
        assert same_bits(array, arrays[name]), name


def test_python_appends_and_deletions_are_read_by_swift(tmp_path) -> None:
    path = tmp_path / "log.ckpt"
    save_file({"a": np.arange(4, dtype=np.int32), "b": np.ones(4, np.float32)}, path)
    with ContainerWriter.append(path) as w:
        w.write("a", np.arange(4, dtype=np.int32) * 10)
        w.delete("b")
        w.write("c", np.zeros(8, np.float64), options=cc.EncodeOptions(codec="lz4"))
    assert "all checksums hold" in run_ckpt("verify", str(path)).stdout
    st = tmp_path / "log.safetensors"
    run_ckpt("convert", str(path), str(st))
    loaded = safetensors.numpy.load_file(str(st))
    assert sorted(loaded) == ["a", "c"] and loaded["a"].tolist() == [0, 10, 20, 30]


@pytest.mark.skipif(STRESS_BIN is None, reason="checkpoint-stress is not built (swift build)")
def test_swift_appends_deletions_and_manager_checkpoints_load_in_python(tmp_path) -> None:
    prefix = tmp_path / "run"
    prefix.mkdir()
    log = tmp_path / "log.ckpt"
    subprocess.run([STRESS_BIN, "child", str(prefix), "--blobs", "2", "--bytes", "4096", "--epochs", "7",
                    "--append-log", str(log)], check=True, capture_output=True, timeout=300)
    # The append log: one append per epoch, each deleting the blob of three epochs before.
    inspected = json.loads(run_ckpt("inspect", str(log), "--json").stdout)
    with ContainerFile(log) as f:
        assert f.names() == [b["name"] for b in inspected["blobs"]] == ["epoch.5", "epoch.6", "epoch.7"]
        assert f.generation == 8
        st = tmp_path / "log.safetensors"
        run_ckpt("convert", str(log), str(st))
        for name, array in safetensors.numpy.load_file(str(st)).items():
            assert same_bits(f.array(name), array)
    report = cc.scan(log)
    assert report.keeps_everything and report.blob_names == ["epoch.5", "epoch.6", "epoch.7"]
    # The manager's per-epoch checkpoints (FORMAT.md §6.1).
    newest = prefix / "trainer_0.7"
    with ContainerFile(newest) as f:
        assert f.metadata["checkpoint.epoch"] == "7" and f.metadata["checkpoint.node"] == "trainer_0"
        assert json.loads(f.metadata["checkpoint.blob_list"]) == f.names()
        assert int(f.array("epoch")) == 7


def test_torn_files_open_and_recover_alike_in_python_and_swift(tmp_path) -> None:
    path = tmp_path / "torn.ckpt"
    save_file({"a": np.arange(10), "b": np.ones(3)}, path)
    with ContainerWriter.append(path) as w:
        w.write("c", np.zeros(2))
    data = path.read_bytes()
    path.write_bytes(data[:-20])
    swift_view = json.loads(run_ckpt("inspect", str(path), "--json").stdout)
    with ContainerFile(path) as f:
        assert f.names() == [b["name"] for b in swift_view["blobs"]] == ["a", "b"]
        assert f.torn_bytes > 0
    verify = run_ckpt("verify", str(path), check=False)
    assert verify.returncode == 65 and "TORN" in verify.stdout
    swift_fixed = tmp_path / "swift-fixed.ckpt"
    run_ckpt("recover", str(path), "-o", str(swift_fixed))
    report = cc.repair(path)
    assert ContainerFile(swift_fixed).names() == ContainerFile(path).names() == report.blob_names == ["a", "b", "c"]
    assert "all checksums hold" in run_ckpt("verify", str(path)).stdout


def test_a_flipped_payload_byte_is_named_by_both_sides(tmp_path, model: Path) -> None:
    out = tmp_path / "model.ckpt"
    run_ckpt("convert", str(model), str(out), "--codec", "lz4")
    name = "encoder.layer.1.intermediate.dense.weight"
    entry = ContainerFile(out).entry(name)
    data = bytearray(out.read_bytes())
    data[entry.payload_offset + entry.stored_size // 2] ^= 4
    out.write_bytes(bytes(data))
    with pytest.raises(cc.ChecksumError, match=f"blob '{name}'"):
        load_file(out)
    verify = run_ckpt("verify", str(out), check=False)
    assert verify.returncode == 65 and name in verify.stdout + verify.stderr


def test_swift_converted_npz_with_c128_loads_bit_exact(tmp_path) -> None:
    rng = np.random.default_rng(9)
    arrays = {"c128": (rng.standard_normal(50) + 1j * rng.standard_normal(50)).astype(np.complex128),
              "f64": rng.standard_normal((5, 5)), "u16": np.arange(7, dtype=np.uint16)}
    source = tmp_path / "a.npz"
    np.savez(source, **arrays)
    out = tmp_path / "a.ckpt"
    run_ckpt("convert", str(source), str(out), "--codec", "zlib", "--shuffle", "on", "--chunk-size", "64")
    loaded = load_file(out)
    with ContainerFile(out) as f:
        assert f.dtype_name("c128") == "C128" and f.header("c128").element_size == 8
    for name, array in arrays.items():
        assert same_bits(loaded[name], array), name


def test_python_and_swift_writers_exclude_each_other_through_the_lock_file(tmp_path) -> None:
    path = tmp_path / "locked.ckpt"
    save_file({"a": np.arange(3)}, path)
    writer = ContainerWriter.append(path)
    try:
        result = run_ckpt("recover", str(path), check=False)  # an in-place repair takes the writer lock
        assert result.returncode != 0 and "lock" in (result.stderr + result.stdout).lower()
    finally:
        writer.abort()
    assert not (tmp_path / "locked.ckpt.lock").exists()
    run_ckpt("recover", str(path))  # free again
    assert ContainerFile(path).names() == ["a"]
