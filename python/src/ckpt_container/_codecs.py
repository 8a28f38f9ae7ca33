"""Codecs (FORMAT.md §3.5) and the byte-shuffle filter (§3.4).

A codec is one entry of ``CODECS``, keyed by its on-disk id: a new codec is
one more ``Codec`` with its id, its level range, its expansion limit and two
functions, and every reader and writer path picks it up. The byte-plane codec
(id 5, ``_planes``) has no ``compress``: it cuts its segments at the planes,
so the writer calls ``_planes.encode_chunk`` with the element size.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import lz4.block
import numpy as np
import zstandard

from ._planes import PlaneError, decode_chunks
from .errors import CheckpointError, CorruptFileError

Compressor = Callable[[memoryview, int], bytes]
Decompressor = Callable[[memoryview, int], bytes]


@dataclass(frozen=True)
class Codec:
    """One codec of FORMAT.md §3.5.

    Attributes:
        id: the on-disk id.
        name: the lowercase name (as ``ckpt --codec`` spells it).
        levels: the accepted levels, inclusive.
        default_level: the level used when none is given (as ``ckpt`` does).
        max_expansion: the largest raw/stored ratio of one chunk; a chunk claiming more is rejected unread.
        compress: ``(raw, level) -> stored`` (may be larger than the input; the caller then stores raw).
        decompress: ``(stored, raw_length) -> raw``, exactly ``raw_length`` bytes or CorruptFileError.
    """

    id: int
    name: str
    levels: range
    default_level: int
    max_expansion: int
    compress: Optional[Compressor]
    decompress: Optional[Decompressor]


def _lz4_compress(raw: memoryview, level: int) -> bytes:
    return lz4.block.compress(raw, mode="default", acceleration=1, store_size=False)


def _lz4hc_compress(raw: memoryview, level: int) -> bytes:
    return lz4.block.compress(raw, mode="high_compression", compression=level, store_size=False)


def _lz4_decompress(stored: memoryview, raw_length: int) -> bytes:
    try:
        out = lz4.block.decompress(stored, uncompressed_size=raw_length)
    except lz4.block.LZ4BlockError as error:
        raise CorruptFileError(f"LZ4 block is malformed or does not decode to {raw_length} bytes ({error})") from None
    if len(out) != raw_length:
        raise CorruptFileError(f"LZ4 block decodes to {len(out)} bytes, expected {raw_length}")
    return out


def _zlib_compress(raw: memoryview, level: int) -> bytes:
    return zlib.compress(raw, level)


def _zlib_decompress(stored: memoryview, raw_length: int) -> bytes:
    if len(stored) >= 2 and stored[1] & 0x20:
        raise CorruptFileError("zlib stream asks for a preset dictionary (FDICT): chunks are self-contained")
    d = zlib.decompressobj()
    try:
        out = d.decompress(stored, raw_length)
    except zlib.error as error:
        raise CorruptFileError(f"zlib stream is malformed ({error})") from None
    if len(out) != raw_length:
        raise CorruptFileError(f"zlib stream decodes to {len(out)} bytes, expected {raw_length}")
    if not d.eof:
        raise CorruptFileError(f"zlib stream decodes to more than {raw_length} bytes or is cut short")
    if d.unused_data:
        raise CorruptFileError(f"{len(d.unused_data)} bytes after the zlib stream")
    return out


def _zstd_compress(raw: memoryview, level: int) -> bytes:
    # One-shot compression of a known size, content size written, no checksum, no dictionary id:
    # the frame ZSTD_compressCCtx writes.
    compressor = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False,
                                          write_dict_id=False)
    return compressor.compress(raw)


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _zstd_decompress(stored: memoryview, raw_length: int) -> bytes:
    if bytes(stored[:4]) != _ZSTD_MAGIC:
        raise CorruptFileError("not a Zstandard frame (a skippable frame, or no frame magic)")
    try:
        declared = zstandard.frame_content_size(stored)
        dictionary = zstandard.get_frame_parameters(stored).dict_id
    except zstandard.ZstdError as error:
        raise CorruptFileError(f"zstd frame header is malformed ({error})") from None
    if dictionary:
        raise CorruptFileError(f"zstd frame names dictionary {dictionary}: chunks are self-contained")
    if declared < 0:
        raise CorruptFileError("zstd frame does not state its content size")
    if declared != raw_length:
        raise CorruptFileError(f"zstd frame states {declared} bytes, expected {raw_length}")
    d = zstandard.ZstdDecompressor().decompressobj()
    try:
        out = d.decompress(stored)
    except zstandard.ZstdError as error:
        raise CorruptFileError(f"zstd frame is malformed ({error})") from None
    if not d.eof:
        raise CorruptFileError("zstd frame is cut short")
    if d.unused_data:
        raise CorruptFileError(f"{len(d.unused_data)} bytes after the zstd frame")
    if len(out) != raw_length:
        raise CorruptFileError(f"zstd frame decodes to {len(out)} bytes, expected {raw_length}")
    return out


def _planes_decompress(stored: memoryview, raw_length: int) -> bytes:
    try:
        return decode_chunks([(stored, raw_length)])[0].tobytes()
    except PlaneError as error:
        raise CorruptFileError(error.reason) from None


PLANES_ID = 5

CODECS: Dict[int, Codec] = {c.id: c for c in [
    Codec(0, "none", range(0, 1), 0, 1, None, None),
    Codec(1, "lz4", range(0, 1), 0, 256, _lz4_compress, _lz4_decompress),
    Codec(2, "lz4hc", range(1, 13), 9, 256, _lz4hc_compress, _lz4_decompress),
    Codec(3, "zlib", range(1, 10), 6, 1040, _zlib_compress, _zlib_decompress),
    Codec(4, "zstd", range(1, 20), 1, 65536, _zstd_compress, _zstd_decompress),
    Codec(PLANES_ID, "planes", range(0, 1), 0, 262144, None, _planes_decompress),
]}

CODECS_BY_NAME: Dict[str, Codec] = {c.name: c for c in CODECS.values()}

FILTER_NONE = 0
FILTER_SHUFFLE = 1
FILTER_ROTATE_SHUFFLE = 2


def parse_codec(codec: str, level: Optional[int] = None) -> "tuple[Codec, int]":
    """Resolves ``"zstd"``, ``"zstd-3"`` or ``("zstd", 3)`` to a codec and a checked level."""
    text = codec.lower()
    name, _, suffix = text.partition("-")
    found = CODECS_BY_NAME.get(name)
    if found is None:
        raise CheckpointError(f"unknown codec {codec!r} (one of {', '.join(CODECS_BY_NAME)})")
    if suffix:
        if level is not None:
            raise CheckpointError(f"codec {codec!r} names a level and level={level} gives another")
        try:
            level = int(suffix)
        except ValueError:
            raise CheckpointError(f"codec level {suffix!r} is not a number") from None
    if level is None:
        level = found.default_level
    if level not in found.levels:
        raise CheckpointError(f"level {level} outside {found.levels.start}..{found.levels.stop - 1} for {found.name}")
    return found, level


def shuffle(raw: memoryview, element_size: int) -> np.ndarray:
    """Byte shuffle (FORMAT.md §3.4): byte k of element i to position k·n + i; the tail stays."""
    a = np.frombuffer(raw, dtype=np.uint8)
    n = a.size // element_size
    out = np.empty_like(a)
    body = n * element_size
    out[:body].reshape(element_size, n)[...] = a[:body].reshape(n, element_size).T
    out[body:] = a[body:]
    return out


def unshuffle(shuffled: object, element_size: int, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The inverse of ``shuffle``, into ``out`` (a uint8 array of the same size) when given."""
    a = np.frombuffer(shuffled, dtype=np.uint8)  # type: ignore[call-overload]
    if out is None:
        out = np.empty_like(a)
    n = a.size // element_size
    body = n * element_size
    out[:body].reshape(n, element_size)[...] = a[:body].reshape(element_size, n).T
    out[body:] = a[body:]
    return out


def unfilter(decoded: object, filter_id: int, element_size: int, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The raw bytes of a decoded chunk: the inverse of its filter (FORMAT.md §3.4, §3.4.1), into ``out`` when given."""
    if filter_id == FILTER_NONE:
        a = np.frombuffer(decoded, dtype=np.uint8)  # type: ignore[call-overload]
        if out is None:
            return a.copy()
        out[...] = a
        return out
    out = unshuffle(decoded, element_size, out)
    if filter_id == FILTER_ROTATE_SHUFFLE:
        # Rotate every whole element right by one bit (its bit 0 back to the top).
        elements, word = _elements(out, element_size)
        elements[...] = (elements >> word(1)) | (elements << word(8 * element_size - 1))
    return out


def apply_filter(raw: memoryview, filter_id: int, element_size: int) -> object:
    """A chunk's filtered bytes (FORMAT.md §3.4, §3.4.1): ``raw`` itself for no filter."""
    if filter_id == FILTER_NONE:
        return raw
    if filter_id == FILTER_ROTATE_SHUFFLE:
        # Rotate every whole element left by one bit (its top bit to bit 0), then shuffle.
        rotated = np.frombuffer(raw, dtype=np.uint8).copy()
        elements, word = _elements(rotated, element_size)
        elements[...] = (elements << word(1)) | (elements >> word(8 * element_size - 1))
        return shuffle(memoryview(rotated), element_size)
    return shuffle(raw, element_size)


def _elements(a: np.ndarray, element_size: int) -> "tuple[np.ndarray, type]":
    """The whole elements of the byte array ``a`` as little-endian unsigned integers of
    ``element_size`` (2, 4 or 8) bytes (a view: writes go to ``a``), and that integer type."""
    word = {2: np.uint16, 4: np.uint32, 8: np.uint64}[element_size]
    body = a.size // element_size * element_size
    return a[:body].view(np.dtype(word).newbyteorder("<")), word
