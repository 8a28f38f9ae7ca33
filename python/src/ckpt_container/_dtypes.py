"""The dtype table of FORMAT.md §3.6 and its mapping to numpy (and ml_dtypes).

Every dtype id maps to one numpy dtype: the standard ones, ``ml_dtypes``'
bfloat16 and fp8/fp6/fp4 types (the convention JAX uses), ``uint8`` for RAW
and ``object`` (Python ``str``) for STRING. Sub-byte dtypes (F6_*, F4) are
packed in the file (FORMAT.md §3.6) and one element per byte in numpy
(``ml_dtypes``' own layout): reading unpacks, writing packs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import ml_dtypes
import numpy as np

from .errors import CheckpointError, CorruptFileError


@dataclass(frozen=True)
class DType:
    """One dtype of FORMAT.md §3.6.

    Attributes:
        id: the on-disk id.
        name: the safetensors name (``C128``, ``RAW``, ``STRING`` where safetensors has none).
        bits: bits per element (0 for STRING).
        numpy: the numpy dtype of arrays of this dtype (little-endian).
        is_float: floating point or complex (what ``shuffle="auto"`` shuffles).
        shuffle_size: the byte-shuffle element size (one real component), or None.
    """

    id: int
    name: str
    bits: int
    numpy: np.dtype
    is_float: bool
    shuffle_size: Optional[int]

    @property
    def packed(self) -> bool:
        """True for the sub-byte dtypes, packed densely in the file."""
        return 0 < self.bits < 8

    def byte_count(self, element_count: int) -> Optional[int]:
        """Bytes of ``element_count`` elements; None for STRING.

        Raises CorruptFileError when a sub-byte tensor does not fill whole bytes.
        """
        if self.bits == 0:
            return None
        bits = element_count * self.bits
        if bits % 8:
            raise CorruptFileError(f"{element_count} elements of {self.name} ({self.bits} bits each) do not fill whole bytes")
        return bits // 8


def _d(id: int, name: str, bits: int, numpy_type: object, is_float: bool = False) -> DType:
    dtype = np.dtype(numpy_type)
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    if is_float and name in ("C64",):
        shuffle: Optional[int] = 4
    elif is_float and name == "C128":
        shuffle = 8
    elif bits > 8 and bits % 8 == 0:
        shuffle = bits // 8
    else:
        shuffle = None
    return DType(id, name, bits, dtype, is_float, shuffle)


DTYPES: Dict[int, DType] = {d.id: d for d in [
    _d(1, "BOOL", 8, np.bool_),
    _d(2, "U8", 8, np.uint8),
    _d(3, "I8", 8, np.int8),
    _d(4, "U16", 16, "<u2"),
    _d(5, "I16", 16, "<i2"),
    _d(6, "F16", 16, "<f2", True),
    _d(7, "BF16", 16, ml_dtypes.bfloat16, True),
    _d(8, "U32", 32, "<u4"),
    _d(9, "I32", 32, "<i4"),
    _d(10, "F32", 32, "<f4", True),
    _d(11, "U64", 64, "<u8"),
    _d(12, "I64", 64, "<i8"),
    _d(13, "F64", 64, "<f8", True),
    _d(14, "C64", 64, "<c8", True),
    _d(15, "C128", 128, "<c16", True),
    _d(16, "F8_E4M3", 8, ml_dtypes.float8_e4m3fn, True),
    _d(17, "F8_E5M2", 8, ml_dtypes.float8_e5m2, True),
    _d(18, "F8_E8M0", 8, ml_dtypes.float8_e8m0fnu, True),
    _d(19, "F8_E4M3FNUZ", 8, ml_dtypes.float8_e4m3fnuz, True),
    _d(20, "F8_E5M2FNUZ", 8, ml_dtypes.float8_e5m2fnuz, True),
    _d(21, "F6_E2M3", 6, ml_dtypes.float6_e2m3fn, True),
    _d(22, "F6_E3M2", 6, ml_dtypes.float6_e3m2fn, True),
    _d(23, "F4", 4, ml_dtypes.float4_e2m1fn, True),
    _d(32, "RAW", 8, np.uint8),
    _d(33, "STRING", 0, object),
]}

BY_NAME: Dict[str, DType] = {d.name: d for d in DTYPES.values()}
STRING = DTYPES[33]
RAW = DTYPES[32]

# numpy dtype -> our dtype. RAW is never inferred (uint8 arrays are U8); STRING is inferred from str arrays.
_BY_NUMPY: Dict[np.dtype, DType] = {d.numpy: d for d in DTYPES.values() if d.id not in (32, 33)}


def dtype_for_array(array: np.ndarray, *, name: str = "") -> DType:
    """The dtype an array is written as; raises CheckpointError for an unsupported numpy dtype."""
    dt = array.dtype
    if dt.kind in ("U", "T") or dt == np.dtype(object):
        return STRING
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    found = _BY_NUMPY.get(dt)
    if found is None:
        raise CheckpointError(f"numpy dtype {array.dtype} has no container dtype", blob=name or None)
    return found


def unpack_subbyte(packed: np.ndarray, dtype: DType, count: int) -> np.ndarray:
    """Unpacks ``count`` F4 or F6 elements (FORMAT.md §3.6, LSB first) into one byte each."""
    u = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if dtype.bits == 4:
        out = np.empty(count, dtype=np.uint8)
        out[0::2] = u & 0x0F
        out[1::2] = u >> 4
    elif dtype.bits == 6:
        groups = u.reshape(-1, 3).astype(np.uint32)
        v = groups[:, 0] | (groups[:, 1] << 8) | (groups[:, 2] << 16)
        out = np.empty((v.shape[0], 4), dtype=np.uint8)
        for j in range(4):
            out[:, j] = (v >> (6 * j)) & 0x3F
        out = out.reshape(-1)
    else:  # pragma: no cover - only sub-byte dtypes come here
        raise ValueError(dtype.name)
    return out.view(dtype.numpy)


def pack_subbyte(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Packs F4 or F6 elements (one per byte, ml_dtypes layout) into FORMAT.md's dense bit stream."""
    u = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
    mask = (1 << dtype.bits) - 1
    if dtype.bits == 4:
        if u.size % 2:
            raise CheckpointError(f"{u.size} elements of F4 do not fill whole bytes")
        return ((u[0::2] & mask) | ((u[1::2] & mask) << 4)).astype(np.uint8)
    if u.size % 4:
        raise CheckpointError(f"{u.size} elements of {dtype.name} do not fill whole bytes")
    e = (u.reshape(-1, 4) & mask).astype(np.uint32)
    v = e[:, 0] | (e[:, 1] << 6) | (e[:, 2] << 12) | (e[:, 3] << 18)
    out = np.empty((v.shape[0], 3), dtype=np.uint8)
    out[:, 0] = v & 0xFF
    out[:, 1] = (v >> 8) & 0xFF
    out[:, 2] = (v >> 16) & 0xFF
    return out.reshape(-1)


def decode_strings(raw: memoryview, count: int) -> np.ndarray:
    """Decodes a STRING blob (FORMAT.md §3.6) into an object array of ``str``; raises CorruptFileError."""
    size = len(raw)
    if count > size // 8:
        raise CorruptFileError(f"STRING blob of {size} bytes cannot hold {count} lengths")
    lengths = np.frombuffer(raw, dtype="<u8", count=count)
    total = int(lengths.sum(dtype=np.uint64)) if count else 0
    if count and int(lengths.max()) > size:  # guards the sum against wrap-around
        raise CorruptFileError("STRING lengths exceed the blob")
    if total != size - 8 * count:
        raise CorruptFileError(f"STRING lengths add up to {total}, the blob holds {size - 8 * count} string bytes")
    out = np.empty(count, dtype=object)
    position = 8 * count
    data = bytes(raw[position:])
    position = 0
    for i, length in enumerate(lengths.tolist()):
        try:
            out[i] = data[position:position + length].decode("utf-8")
        except UnicodeDecodeError as error:
            raise CorruptFileError(f"STRING element {i} is not valid UTF-8") from error
        position += length
    return out


def encode_strings(array: np.ndarray) -> bytes:
    """Encodes an array of ``str`` as a STRING blob's raw bytes."""
    items = [s.encode("utf-8") if isinstance(s, str) else None for s in np.asarray(array, dtype=object).reshape(-1)]
    if any(item is None for item in items):
        raise CheckpointError("a STRING tensor must hold only str")
    lengths = np.array([len(item) for item in items], dtype="<u8")  # type: ignore[arg-type]
    return lengths.tobytes() + b"".join(items)  # type: ignore[arg-type]
