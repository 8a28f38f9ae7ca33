"""Byte layouts of FORMAT.md: blob header (§3), file header, record frame,
index body, trailer and deletion marker (§4). Pure code: bytes in, values out.

Parsers validate in the order FORMAT.md gives (§3.7, §4.7) and raise
``CorruptFileError`` / ``UnsupportedError`` with the offset *relative to the
structure*; callers add the file, the blob and the structure's file offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ._codecs import CODECS, FILTER_NONE, FILTER_ROTATE_SHUFFLE, FILTER_SHUFFLE
from ._crc import combine, crc32c
from ._dtypes import DTYPES
from .errors import ChecksumError, CorruptFileError, TornFileError, UnsupportedError

# §3.1
BLOB_MAGIC = 0x48424B43  # "CKBH"
BLOB_FIXED = struct.Struct("<IHHIBBBBBBHIQQQQII")
assert BLOB_FIXED.size == 64
MAX_RANK = 64
MAX_CHUNK_SIZE = 1 << 30
DEFAULT_CHUNK_SIZE = 4 << 20
# The chunk size of codec "auto" (as `ckpt --codec auto`, EncodeOptions.recommended in Swift).
AUTO_CHUNK_SIZE = 1 << 20
MAX_RAW = (1 << 63) - 1

# §4
FILE_MAGIC = b"\x89CKPT\r\n\x1a"
FILE_HEADER_SIZE = 64
FRAME = struct.Struct("<IHHIIQII")
FRAME_SIZE = 32
FRAME_MAGIC = 0x43524B43  # "CKRC"
TRAILER = struct.Struct("<IIQQQQI12sII")
TRAILER_SIZE = 64
TRAILER_MAGIC = 0x52544B43  # "CKTR"
TRAILER_END = 0x444E4B43  # "CKND"
INDEX_MAGIC = 0x58494B43  # "CKIX"
INDEX_HEAD = struct.Struct("<IIQIIII")
INDEX_ENTRY = struct.Struct("<QQQQIIIIHBBBBBBB7s")
assert INDEX_ENTRY.size == 64
KIND_BLOB, KIND_DELETION, KIND_REFERENCE, KIND_INDEX = 1, 2, 3, 4
UNIT_ALIGNMENT = 8


def align_up(value: int, alignment: int) -> int:
    """``value`` rounded up to a multiple of ``alignment`` (a power of two)."""
    return (value + alignment - 1) & ~(alignment - 1)


def valid_alignment(alignment: int) -> bool:
    """A payload alignment FORMAT.md allows: a power of two in 8…4096."""
    return 8 <= alignment <= 4096 and alignment & (alignment - 1) == 0


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptFileError(f"{what} is not valid UTF-8") from None


def check_name(name: str, *, allow_empty: bool = True) -> bytes:
    """A name's UTF-8 bytes; raises CorruptFileError unless 0…65535 bytes without NUL.

    Blob names may be empty (FORMAT.md §3.2: ``""`` is a name like any other), and so may
    the name a deletion marker removes: §4.3 says "1…65535 bytes …, as a blob name", which
    contradicts §3.2 since the empty name was allowed; the Swift reader accepts it, as here.
    """
    encoded = name.encode("utf-8")
    if not encoded and not allow_empty:
        raise CorruptFileError("name is empty")
    if len(encoded) > 65535:
        raise CorruptFileError(f"blob name of {len(encoded)} bytes exceeds 65535")
    if b"\x00" in encoded:
        raise CorruptFileError("blob name contains NUL")
    return encoded


# ---------------------------------------------------------------------------- key/value lists


def encode_key_values(pairs: Dict[str, str]) -> bytes:
    """Attributes (§3.2) or file metadata (§4.4): keys sorted by UTF-8 bytes."""
    items = sorted(((k.encode("utf-8"), v.encode("utf-8")) for k, v in pairs.items()), key=lambda kv: kv[0])
    out = bytearray()
    for key, value in items:
        if not key or len(key) > 65535 or len(value) > 0xFFFFFFFF:
            raise CorruptFileError(f"key {key[:64]!r}: empty, or key or value too long")
        out += struct.pack("<H", len(key)) + key + struct.pack("<I", len(value)) + value
    return bytes(out)


def parse_key_values(data: bytes, what: str) -> Dict[str, str]:
    """Parses ``u16 key_length, key, u32 value_length, value`` entries, keys strictly ascending."""
    result: Dict[str, str] = {}
    position = 0
    previous: Optional[bytes] = None
    end = len(data)
    while position < end:
        if end - position < 2:
            raise CorruptFileError(f"{what}: entry cut short at byte {position}")
        (key_length,) = struct.unpack_from("<H", data, position)
        position += 2
        if key_length == 0 or end - position < key_length + 4:
            raise CorruptFileError(f"{what}: empty or cut short key at byte {position}")
        key = data[position:position + key_length]
        position += key_length
        (value_length,) = struct.unpack_from("<I", data, position)
        position += 4
        if end - position < value_length:
            raise CorruptFileError(f"{what}: value of {value_length} bytes cut short at byte {position}")
        value = data[position:position + value_length]
        position += value_length
        if previous is not None and not previous < key:
            raise CorruptFileError(f"{what}: keys not strictly ascending at {key[:64]!r}")
        previous = key
        result[_utf8(key, f"{what} key")] = _utf8(value, f"{what} value")
    return result


# ---------------------------------------------------------------------------- blob header (§3)


@dataclass
class BlobHeader:
    """A parsed and validated blob header (FORMAT.md §3.1–3.2)."""

    dtype: int
    codec: int
    level: int
    filter: int
    element_size: int
    shape: Tuple[int, ...]
    name: str
    attributes: Dict[str, str]
    raw_size: int
    stored_size: int
    chunk_size: int
    raw_crc: int
    chunks: List[Tuple[int, int]]  # (stored_size, crc32c)
    length: int = 0  # header_length

    def chunk_raw_length(self, index: int) -> int:
        """Raw bytes of chunk ``index`` (the last may be shorter)."""
        return min(self.chunk_size, self.raw_size - index * self.chunk_size)

    @property
    def stored_raw(self) -> bool:
        """True when every chunk is stored raw: the payload is the raw bytes (viewable in place)."""
        return self.stored_size == self.raw_size

    def payload_crc(self) -> int:
        """The CRC32C of the whole payload, combined from the chunk CRCs (no data pass)."""
        crc = 0
        for stored, chunk_crc in self.chunks:
            crc = combine(crc, chunk_crc, stored)
        return crc


def element_count(shape: Sequence[int]) -> int:
    """The product of the dimensions; CorruptFileError when it overflows a signed 64-bit count."""
    count = 1
    for d in shape:
        count *= d
    if count > MAX_RAW:
        raise CorruptFileError(f"shape {list(shape)} has {count} elements, more than 2^63-1")
    return count


def chunk_count(raw_size: int, chunk_size: int) -> int:
    return 0 if raw_size == 0 else (raw_size - 1) // chunk_size + 1


def parse_blob_header(buf: bytes) -> BlobHeader:
    """Parses and fully validates a blob header at the start of ``buf`` (FORMAT.md §3.7, steps 1–9).

    Allocates nothing in proportion to a declared size: every count is checked
    against the bytes present first.
    """
    if len(buf) < 64:
        raise CorruptFileError(f"blob header: {len(buf)} bytes, fewer than the 64-byte fixed part", offset=0)
    (magic, version, flags, length, dtype_id, codec_id, level, filter_id, element_size, rank, name_length,
     attr_length, raw_size, stored_size, chunk_size, count, raw_crc, reserved) = BLOB_FIXED.unpack_from(buf, 0)
    if magic != BLOB_MAGIC:
        raise CorruptFileError(f"blob header: bad magic 0x{magic:08x}", offset=0)
    if version != 1:
        raise UnsupportedError(f"blob header version {version}", offset=4)
    if length < 68 or length > len(buf):
        raise CorruptFileError(f"blob header length {length} (must be 68…{len(buf)})", offset=8)
    stored_crc = struct.unpack_from("<I", buf, length - 4)[0]
    actual = crc32c(memoryview(buf)[:length - 4])
    if stored_crc != actual:
        raise ChecksumError("blob header", stored_crc, actual, offset=length - 4)
    if flags:
        raise CorruptFileError(f"blob header flags 0x{flags:x} (reserved bits set)", offset=6)
    if reserved:
        raise CorruptFileError("blob header reserved field is not zero", offset=60)
    dtype = DTYPES.get(dtype_id)
    if dtype is None:
        raise UnsupportedError(f"unknown dtype id {dtype_id}", offset=12)
    codec = CODECS.get(codec_id)
    if codec is None:
        raise UnsupportedError(f"unknown codec id {codec_id}", offset=13)
    if level not in codec.levels:
        raise CorruptFileError(f"codec level {level} outside the range of {codec.name}", offset=14)
    if filter_id == FILTER_NONE:
        if element_size != 0:
            raise CorruptFileError(f"filter element size {element_size} with no filter", offset=16)
    elif filter_id == FILTER_SHUFFLE:
        if not 2 <= element_size <= 16:
            raise CorruptFileError(f"shuffle element size {element_size} outside 2…16", offset=16)
        if codec_id == 0:
            raise CorruptFileError("shuffle filter without compression", offset=15)
    elif filter_id == FILTER_ROTATE_SHUFFLE:
        if element_size not in (2, 4, 8):
            raise CorruptFileError(f"rotate + shuffle element size {element_size} is not 2, 4 or 8", offset=16)
        if codec_id == 0:
            raise CorruptFileError("rotate + shuffle filter without compression", offset=15)
    else:
        raise UnsupportedError(f"unknown filter id {filter_id}", offset=15)
    if rank > MAX_RANK:
        raise CorruptFileError(f"rank {rank} exceeds {MAX_RANK}", offset=17)
    if raw_size > MAX_RAW:
        raise CorruptFileError(f"raw size {raw_size} exceeds 2^63-1", offset=24)
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise CorruptFileError(f"chunk size {chunk_size} outside 1…2^30", offset=40)
    expected_chunks = chunk_count(raw_size, chunk_size)
    if count != expected_chunks:
        raise CorruptFileError(f"chunk count {count}, but {raw_size} bytes in chunks of {chunk_size} make {expected_chunks}",
                               offset=48)
    if length != 64 + 8 * rank + name_length + attr_length + 8 * count + 4:
        raise CorruptFileError(f"header length {length} disagrees with its fields", offset=8)
    position = 64
    shape = struct.unpack_from(f"<{rank}Q", buf, position)
    for i, d in enumerate(shape):
        if d > MAX_RAW:
            raise CorruptFileError(f"dimension {d} exceeds 2^63-1", offset=position + 8 * i)
    position += 8 * rank
    elements = 0 if 0 in shape else element_count(shape)
    name_bytes = bytes(buf[position:position + name_length])
    name = _utf8(name_bytes, "blob name")
    try:
        check_name(name)
    except CorruptFileError as error:
        error.offset = position
        raise
    position += name_length
    try:
        attributes = parse_key_values(bytes(buf[position:position + attr_length]), "attributes")
    except CorruptFileError as error:
        error.offset = position
        raise
    position += attr_length
    expected_raw = dtype.byte_count(elements)
    if expected_raw is None:
        if raw_size < 8 * elements:
            raise CorruptFileError(f"STRING raw size {raw_size} < 8 × {elements}", offset=24)
    elif expected_raw != raw_size:
        raise CorruptFileError(f"raw size {raw_size}, but {dtype.name} {list(shape)} is {expected_raw} bytes", offset=24)
    chunks: List[Tuple[int, int]] = []
    total = 0
    table = struct.unpack_from(f"<{2 * count}I", buf, position) if count else ()
    for index in range(count):
        stored, chunk_crc = table[2 * index], table[2 * index + 1]
        raw_length = min(chunk_size, raw_size - index * chunk_size)
        if stored > raw_length:
            raise CorruptFileError(f"chunk {index} stored size {stored} exceeds its raw length {raw_length}",
                                   offset=position + 8 * index)
        if stored < raw_length:
            if codec_id == 0:
                raise CorruptFileError(f"chunk {index} stored size {stored} < raw length {raw_length} with no compression",
                                       offset=position + 8 * index)
            if stored == 0 or raw_length > stored * codec.max_expansion:
                raise CorruptFileError(f"chunk {index}: {stored} stored bytes cannot expand to {raw_length} with {codec.name}",
                                       offset=position + 8 * index)
        total += stored
        chunks.append((stored, chunk_crc))
    if total != stored_size:
        raise CorruptFileError(f"stored size {stored_size}, but the chunk table sums to {total}", offset=32)
    return BlobHeader(dtype_id, codec_id, level, filter_id, element_size, tuple(shape), name, attributes,
                      raw_size, stored_size, chunk_size, raw_crc, chunks, length)


def encode_blob_header(h: BlobHeader) -> bytes:
    """Serialises a blob header (FORMAT.md §3.1–3.2), ending with its CRC32C."""
    name = check_name(h.name)
    attributes = encode_key_values(h.attributes)
    rank = len(h.shape)
    length = 64 + 8 * rank + len(name) + len(attributes) + 8 * len(h.chunks) + 4
    if length > 0xFFFFFFFF:
        raise CorruptFileError(f"blob header of {length} bytes exceeds 2^32-1")
    out = bytearray(BLOB_FIXED.pack(BLOB_MAGIC, 1, 0, length, h.dtype, h.codec, h.level, h.filter, h.element_size, rank,
                                    len(name), len(attributes), h.raw_size, h.stored_size, h.chunk_size, len(h.chunks),
                                    h.raw_crc, 0))
    out += struct.pack(f"<{rank}Q", *h.shape)
    out += name
    out += attributes
    for stored, chunk_crc in h.chunks:
        out += struct.pack("<II", stored, chunk_crc)
    out += struct.pack("<I", crc32c(bytes(out)))
    h.length = length
    return bytes(out)


# ---------------------------------------------------------------------------- file header (§4.1)


def encode_file_header(alignment: int) -> bytes:
    head = FILE_MAGIC + struct.pack("<HHI", 1, 0, alignment) + bytes(44)
    return head + struct.pack("<I", crc32c(head))


def parse_file_header(buf: bytes) -> int:
    """Validates the 64-byte file header; returns the file's payload alignment."""
    if len(buf) < FILE_HEADER_SIZE:
        raise TornFileError(f"{len(buf)} bytes, shorter than the file header", offset=0)
    # FORMAT.md §4.1's order: magic, CRC, version, flags, alignment, reserved bytes.
    if buf[:8] != FILE_MAGIC:
        raise CorruptFileError("not a container file (bad file magic)", offset=0)
    stored = struct.unpack_from("<I", buf, 60)[0]
    actual = crc32c(buf[:60])
    if stored != actual:
        raise ChecksumError("file header", stored, actual, offset=60)
    version, flags, alignment = struct.unpack_from("<HHI", buf, 8)
    if version != 1:
        raise UnsupportedError(f"file version {version}", offset=8)
    if flags:
        raise CorruptFileError(f"file flags 0x{flags:x} (reserved bits set)", offset=10)
    if not valid_alignment(alignment):
        raise CorruptFileError(f"alignment {alignment} is not a power of two in 8…4096", offset=12)
    if any(buf[16:60]):
        raise CorruptFileError("file header reserved bytes are not zero", offset=16)
    return alignment


# ---------------------------------------------------------------------------- record frame (§4.2)


@dataclass
class Frame:
    kind: int
    header_length: int
    padding_length: int
    payload_length: int
    payload_crc: int

    @property
    def payload_start(self) -> int:
        """Bytes from the frame's start to the payload's start."""
        return FRAME_SIZE + self.header_length + self.padding_length

    @property
    def length(self) -> int:
        """Bytes from the frame's start to the payload's end (without the pad to 8)."""
        return self.payload_start + self.payload_length

    def encode(self) -> bytes:
        head = struct.pack("<IHHIIQI", FRAME_MAGIC, self.kind, 0, self.header_length, self.padding_length,
                           self.payload_length, self.payload_crc)
        return head + struct.pack("<I", crc32c(head))


def parse_frame(buf: bytes, offset: int) -> Frame:
    """Parses a record frame found at file offset ``offset``: magic, CRC, flags."""
    if len(buf) < FRAME_SIZE:
        raise TornFileError(f"record frame cut short ({len(buf)} of 32 bytes)", offset=offset)
    magic, kind, flags, header_length, padding, payload_length, payload_crc, frame_crc = FRAME.unpack_from(buf, 0)
    if magic != FRAME_MAGIC:
        raise CorruptFileError(f"record frame: bad magic 0x{magic:08x}", offset=offset)
    actual = crc32c(buf[:28])
    if actual != frame_crc:
        raise ChecksumError("record frame", frame_crc, actual, offset=offset + 28)
    if flags:
        raise CorruptFileError(f"record flags 0x{flags:x} (reserved bits set)", offset=offset + 6)
    if payload_length > MAX_RAW:
        raise CorruptFileError(f"record payload length {payload_length} is too large", offset=offset + 16)
    return Frame(kind, header_length, padding, payload_length, payload_crc)


# ---------------------------------------------------------------------------- trailer (§4.6)


@dataclass
class Trailer:
    index_offset: int
    index_length: int
    generation: int
    file_length: int
    index_crc: int

    def encode(self) -> bytes:
        head = struct.pack("<IIQQQQI12s", TRAILER_MAGIC, 1, self.index_offset, self.index_length, self.generation,
                           self.file_length, self.index_crc, bytes(12))
        return head + struct.pack("<II", crc32c(head), TRAILER_END)


def parse_trailer(buf: bytes, offset: int) -> Trailer:
    """Parses the trailer found at file offset ``offset`` (§4.7 step 2, with ``file_length`` = offset + 64).

    Raises TornFileError for anything that looks like a torn end (magics, CRC,
    a trailer that is not where it says it is), other errors for an intact
    trailer with bad fields.
    """
    if len(buf) < TRAILER_SIZE:
        raise TornFileError(f"{len(buf)} bytes where a 64-byte trailer is needed", offset=offset)
    magic, version, index_offset, index_length, generation, file_length, index_crc, reserved, crc, end = \
        TRAILER.unpack_from(buf, 0)
    if end != TRAILER_END or magic != TRAILER_MAGIC:
        raise TornFileError("no trailer at the end of the file", offset=offset)
    actual = crc32c(buf[:56])
    if actual != crc:
        raise TornFileError(f"trailer CRC32C mismatch (stored 0x{crc:08x}, computed 0x{actual:08x})", offset=offset + 56)
    if version != 1:
        raise UnsupportedError(f"trailer version {version}", offset=offset + 4)
    if any(reserved):
        raise CorruptFileError("trailer reserved bytes are not zero", offset=offset + 44)
    if (file_length != offset + TRAILER_SIZE or index_offset < FILE_HEADER_SIZE or index_offset % UNIT_ALIGNMENT
            or index_length < FRAME_SIZE or index_offset + index_length > offset
            or align_up(index_offset + index_length, UNIT_ALIGNMENT) != offset):
        raise TornFileError(f"the trailer at {offset} describes a file of {file_length} bytes with its index at "
                            f"{index_offset}+{index_length}", offset=offset)
    return Trailer(index_offset, index_length, generation, file_length, index_crc)


# ---------------------------------------------------------------------------- index (§4.4–4.5)


@dataclass
class Entry:
    """One index entry (FORMAT.md §4.5)."""

    name: str
    kind: int
    record_offset: int
    payload_offset: int
    stored_size: int
    raw_size: int
    header_length: int
    raw_crc: int
    dtype: int
    codec: int
    level: int
    filter: int
    element_size: int
    shape: Tuple[int, ...]


@dataclass
class Index:
    generation: int
    entries: List[Entry]  # in record order
    by_name: Dict[bytes, Entry]  # keyed by UTF-8 bytes (NFC and NFD are two names)
    metadata: Dict[str, str] = field(default_factory=dict)


def parse_index(body: bytes, data_end: int, generation: int) -> Index:
    """Validates an index body (§4.7 steps 5–8); ``data_end`` is the index record's offset."""
    if len(body) < 32:
        raise CorruptFileError(f"index body of {len(body)} bytes is shorter than its 32-byte head")
    magic, version, body_generation, count, dims_count, names_length, metadata_length = INDEX_HEAD.unpack_from(body, 0)
    if magic != INDEX_MAGIC:
        raise CorruptFileError(f"index: bad magic 0x{magic:08x}")
    if version != 1:
        raise UnsupportedError(f"index version {version}")
    if body_generation != generation:
        raise CorruptFileError(f"index generation {body_generation}, the trailer says {generation}")
    order_start = 32 + 64 * count
    dims_start = align_up(order_start + 4 * count, 8)
    names_start = dims_start + 8 * dims_count
    total = names_start + names_length + metadata_length
    if total != len(body):
        raise CorruptFileError(f"index sections need {total} bytes, the body has {len(body)}")
    if any(body[order_start + 4 * count:dims_start]):
        raise CorruptFileError("index padding is not zero")
    names = body[names_start:names_start + names_length]
    metadata = parse_key_values(bytes(body[names_start + names_length:]), "file metadata")
    dims = struct.unpack_from(f"<{dims_count}Q", body, dims_start) if dims_count else ()
    entries: List[Entry] = []
    previous_end = FILE_HEADER_SIZE
    for i, fields in enumerate(INDEX_ENTRY.iter_unpack(body[32:order_start])):
        (record_offset, payload_offset, stored, raw, name_offset, dims_offset, header_length, raw_crc, name_length,
         kind, dtype, codec, level, filt, element_size, rank, reserved) = fields
        where = f"index entry {i}"
        if any(reserved):
            raise CorruptFileError(f"{where}: reserved bytes not zero")
        if name_offset + name_length > names_length:
            raise CorruptFileError(f"{where}: name outside the name pool")
        if rank > MAX_RANK or dims_offset + rank > dims_count:
            raise CorruptFileError(f"{where}: dimensions outside the dimension pool")
        name = _utf8(bytes(names[name_offset:name_offset + name_length]), f"{where} name")
        if kind == KIND_BLOB:
            if not (record_offset % 8 == 0 and previous_end <= record_offset <= data_end
                    and record_offset + FRAME_SIZE + header_length <= payload_offset <= data_end
                    and stored <= data_end - payload_offset and raw <= MAX_RAW):
                raise CorruptFileError(f"{where} ({name!r}): record at {record_offset}, payload {payload_offset}+{stored} "
                                       f"outside the data area {previous_end}…{data_end} or overlapping")
            previous_end = payload_offset + stored
        entries.append(Entry(name, kind, record_offset, payload_offset, stored, raw, header_length, raw_crc, dtype, codec,
                             level, filt, element_size, tuple(dims[dims_offset:dims_offset + rank])))
    order = struct.unpack_from(f"<{count}I", body, order_start) if count else ()
    by_name: Dict[bytes, Entry] = {}
    previous: Optional[bytes] = None
    seen = set()
    for position in order:
        if position >= count or position in seen:
            raise CorruptFileError("index name order is not a permutation of the entries")
        seen.add(position)
        key = entries[position].name.encode("utf-8")
        if previous is not None and not previous < key:
            raise CorruptFileError(f"index names not strictly ascending at {entries[position].name!r}")
        previous = key
        by_name[key] = entries[position]
    return Index(generation, entries, by_name, metadata)


def encode_index(entries: Sequence[Entry], metadata: Dict[str, str], generation: int) -> bytes:
    """An index body for ``entries`` (in record order) and ``metadata``, exactly as FORMAT.md §4.4 lays it out."""
    names = bytearray()
    dims: List[int] = []
    table = bytearray()
    for e in entries:
        name = e.name.encode("utf-8")
        table += INDEX_ENTRY.pack(e.record_offset, e.payload_offset, e.stored_size, e.raw_size, len(names), len(dims),
                                  e.header_length, e.raw_crc, len(name), KIND_BLOB, e.dtype, e.codec, e.level, e.filter,
                                  e.element_size, len(e.shape), bytes(7))
        names += name
        dims.extend(e.shape)
    order = sorted(range(len(entries)), key=lambda i: entries[i].name.encode("utf-8"))
    meta = encode_key_values(metadata)
    out = bytearray(INDEX_HEAD.pack(INDEX_MAGIC, 1, generation, len(entries), len(dims), len(names), len(meta)))
    out += table
    out += struct.pack(f"<{len(order)}I", *order)
    out += bytes(align_up(len(out), 8) - len(out))
    out += struct.pack(f"<{len(dims)}Q", *dims)
    out += names
    out += meta
    return bytes(out)


# ---------------------------------------------------------------------------- deletion marker (§4.3)


def encode_deletion_header(name: str) -> bytes:
    encoded = check_name(name)
    head = struct.pack("<H", len(encoded)) + encoded
    return head + struct.pack("<I", crc32c(head))


def parse_deletion_header(buf: bytes) -> str:
    if len(buf) < 6:
        raise CorruptFileError(f"deletion marker of {len(buf)} bytes is too short")
    stored = struct.unpack_from("<I", buf, len(buf) - 4)[0]
    actual = crc32c(buf[:-4])
    if stored != actual:
        raise ChecksumError("deletion marker", stored, actual)
    (length,) = struct.unpack_from("<H", buf, 0)
    if length + 6 != len(buf):
        raise CorruptFileError("deletion marker name length disagrees with its header length")
    name = _utf8(bytes(buf[2:2 + length]), "deletion marker name")
    check_name(name)
    return name

