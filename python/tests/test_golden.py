"""Golden bytes: FORMAT.md §3.9 (blob header) and §4.10 (tiny.ckpt), read and written."""

import numpy as np

from ckpt_container import ContainerFile, ContainerWriter, safe_open
from ckpt_container._format import BlobHeader, encode_blob_header, parse_blob_header

from _support import FIXTURES

BLOB_HEADER_3_9 = bytes.fromhex(
    "434b4248" "0100" "0000" "68000000" "0a" "00" "00" "00" "00" "02" "0100" "0b000000"
    "1000000000000000" "1000000000000000" "0000400000000000" "0100000000000000" "0a69ba9e" "00000000"
    "0200000000000000" "0200000000000000" "77" "0400756e6974" "010000006d" "10000000" "0a69ba9e" "e8448516")


def test_blob_header_of_format_md_3_9_parses_and_reencodes() -> None:
    header = parse_blob_header(BLOB_HEADER_3_9)
    assert (header.name, header.shape, header.dtype, header.attributes) == ("w", (2, 2), 10, {"unit": "m"})
    assert (header.raw_size, header.chunk_size, header.raw_crc, header.chunks) == (16, 4 << 20, 0x9EBA690A,
                                                                                 [(16, 0x9EBA690A)])
    again = BlobHeader(10, 0, 0, 0, 0, (2, 2), "w", {"unit": "m"}, 16, 16, 4 << 20, 0x9EBA690A, [(16, 0x9EBA690A)])
    assert encode_blob_header(again) == BLOB_HEADER_3_9


def test_tiny_ckpt_reads_as_format_md_4_10_says() -> None:
    with ContainerFile(FIXTURES / "tiny.ckpt") as f:
        assert f.names() == ["w"] and f.generation == 1 and f.metadata == {} and f.torn_bytes == 0
        assert f.header("w").attributes == {"unit": "m"}
        array = f.array("w")
        assert array.dtype == np.float32 and array.tolist() == [[1, 2], [3, 4]]
        assert not array.flags.writeable  # a view of the read-only mapping
    with safe_open(FIXTURES / "tiny.ckpt", framework="np") as f:
        assert f.keys() == ["w"] and f.get_slice("w")[1].tolist() == [3, 4]


def test_writer_produces_tiny_ckpt_byte_for_byte(tmp_path) -> None:
    path = tmp_path / "tiny.ckpt"
    with ContainerWriter.create(path, durability="none") as writer:
        writer.write("w", np.array([[1, 2], [3, 4]], dtype=np.float32), attributes={"unit": "m"})
    assert path.read_bytes() == (FIXTURES / "tiny.ckpt").read_bytes()
    assert not (tmp_path / "tiny.ckpt.lock").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.ckpt"]  # no temporary left behind
