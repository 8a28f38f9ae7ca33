"""Reading container files (FORMAT.md §4): open, list, view, decode, verify.

Opening reads the file header, the last 64 bytes (the trailer) and the index
record it points to; nothing else is read until a blob is asked for. A torn
end (a crash during an append, a truncated copy) opens as the last complete
commit (§4.8). Blob payloads are read through a read-only ``mmap`` of the
committed part of the file: an uncompressed blob becomes a zero-copy numpy
view; a compressed one decodes into a fresh array.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, TypeVar

import numpy as np

from . import _dtypes
from ._codecs import CODECS, FILTER_NONE, FILTER_ROTATE_SHUFFLE, FILTER_SHUFFLE, PLANES_ID, unfilter
from ._planes import PlaneError, decode_chunks
from ._crc import combine, crc32c
from ._format import (FILE_HEADER_SIZE, FRAME_SIZE, KIND_BLOB, KIND_INDEX, TRAILER_MAGIC, TRAILER_SIZE,
                      UNIT_ALIGNMENT, BlobHeader, Entry, Index, Trailer, align_up, parse_blob_header,
                      parse_file_header, parse_frame, parse_index, parse_trailer)
from .errors import (BlobNotFoundError, ChecksumError, CheckpointError, CorruptFileError, NotViewableError,
                     TornFileError, UnsupportedError)

_POOL: Optional[ThreadPoolExecutor] = None
# Blobs at least this large have their chunks checksummed / decoded on a thread pool.
_PARALLEL_BYTES = 8 << 20
# Raw bytes of plane-codec chunks decoded together (their bit streams run in lockstep: more
# chunks, fewer numpy calls per byte; a batch's decoded chunks are held until unfiltered).
_PLANES_BATCH_BYTES = 256 << 20
# pread granularity of owned loads: each piece is checksummed right after it is read.
_READ_PIECE = 1 << 20


def thread_pool() -> ThreadPoolExecutor:
    """The package's shared worker threads (one per CPU): CRC32C, codecs and pread release the GIL."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="ckpt")
    return _POOL


def open_regular_file(path: str, flags: int) -> int:
    """Opens ``path`` without blocking on a FIFO and refuses anything but a regular file."""
    fd = os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError("not a regular file", path=path)
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def pread_exact(fd: int, offset: int, count: int, size: int) -> bytes:
    """Exactly ``count`` bytes at ``offset``; TornFileError when the file (of ``size`` bytes) ends first."""
    if offset < 0 or count < 0 or offset + count > size:
        raise TornFileError(f"{count} bytes at {offset} are beyond the end of the file ({size} bytes)", offset=offset)
    parts = []
    done = 0
    while done < count:
        piece = os.pread(fd, count - done, offset + done)
        if not piece:
            raise TornFileError(f"the file ended while reading {count} bytes at {offset}", offset=offset + done)
        parts.append(piece)
        done += len(piece)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def open_commit(fd: int, size: int, trailer_offset: int) -> Tuple[Trailer, Index]:
    """Validates the trailer at ``trailer_offset`` and the index it points at (§4.7 steps 2–8)."""
    trailer = parse_trailer(pread_exact(fd, trailer_offset, TRAILER_SIZE, size), trailer_offset)
    frame = parse_frame(pread_exact(fd, trailer.index_offset, FRAME_SIZE, size), trailer.index_offset)
    if (frame.kind != KIND_INDEX or frame.header_length != 0 or frame.padding_length >= 8
            or frame.length != trailer.index_length or (trailer.index_offset + frame.payload_start) % 8):
        raise CorruptFileError(f"index record: kind {frame.kind}, length {frame.length} where the trailer says "
                               f"{trailer.index_length}", offset=trailer.index_offset)
    body_offset = trailer.index_offset + frame.payload_start
    if any(pread_exact(fd, trailer.index_offset + FRAME_SIZE, frame.padding_length, size)):
        raise CorruptFileError("index record padding is not zero", offset=trailer.index_offset + FRAME_SIZE)
    gap_start = trailer.index_offset + frame.length
    if any(pread_exact(fd, gap_start, trailer_offset - gap_start, size)):
        raise CorruptFileError("the gap before the trailer is not zero", offset=gap_start)
    body = pread_exact(fd, body_offset, frame.payload_length, size)
    actual = crc32c(body)
    if actual != frame.payload_crc or actual != trailer.index_crc:
        raise ChecksumError("index body", trailer.index_crc, actual, offset=body_offset)
    try:
        index = parse_index(body, trailer.index_offset, trailer.generation)
    except CheckpointError as error:
        raise error.located(offset=body_offset)
    return trailer, index


Unit = Tuple[str, int, object]  # ("trailer", offset, Trailer) or ("record", offset, Frame)


def walk_units(fd: int, size: int, start: int = FILE_HEADER_SIZE, stop: Optional[List[str]] = None) -> Iterator[Unit]:
    """Steps over the units from ``start`` (§4.8): yields each intact frame and self-placed trailer,
    stops at the first unit that is neither (appending why to ``stop`` when given)."""
    offset = start
    why = stop if stop is not None else []
    while offset < size:
        if size - offset < FRAME_SIZE:
            why.append(f"{size - offset} stray bytes at {offset}")
            return
        head = pread_exact(fd, offset, min(TRAILER_SIZE, size - offset), size)
        try:
            if struct.unpack_from("<I", head, 0)[0] == TRAILER_MAGIC:
                trailer = parse_trailer(head, offset)
                yield ("trailer", offset, trailer)
                offset += TRAILER_SIZE
                continue
            frame = parse_frame(head[:FRAME_SIZE], offset)
        except CheckpointError as error:
            why.append(f"unit at {offset}: {error.reason}")
            return
        if (frame.header_length > size or frame.padding_length > 4096 or frame.payload_length > size
                or frame.length > size - offset):
            why.append(f"record at {offset} extends past the end of the file")
            return
        yield ("record", offset, frame)
        offset = align_up(offset + frame.length, UNIT_ALIGNMENT)


def last_commit(fd: int, size: int) -> Tuple[Trailer, Index]:
    """The last complete commit of a torn file (§4.8): each trailer on the walk that directly
    follows the index record it points to, newest first; the first whose index validates."""
    candidates: List[int] = []
    previous_index: Optional[int] = None
    for kind, offset, value in walk_units(fd, size):
        if kind == "trailer":
            if value.index_offset == previous_index:  # type: ignore[attr-defined]
                candidates.append(offset)
            previous_index = None
        else:
            previous_index = offset if value.kind == KIND_INDEX else None  # type: ignore[attr-defined]
    for offset in reversed(candidates):
        try:
            return open_commit(fd, size, offset)
        except CheckpointError:
            continue
    raise TornFileError("no complete commit in the file (ckpt recover may salvage its records)")


class ContainerFile:
    """An open container file: its blobs by name, zero-copy views and decoding.

    ::

        with ContainerFile("model.ckpt") as f:
            w = f.array("layers.0.weight")          # read-only view of the mapping, CRC-checked

    Opening reads three small pieces of the file (header, trailer, index).
    ``torn_bytes`` says how many bytes past the last complete commit were
    ignored (0 for a file whose end is a commit). Raises ``CheckpointError``
    subclasses naming the file and offset for anything wrong.

    Args:
        path: the file.
    """

    #: The largest blob that decoding allocates for (64 GiB, as the Swift reader): a compressed
    #: blob may declare up to 65536 times its stored size, which the shape alone cannot justify.
    max_raw_size: int = 64 << 30

    def __init__(self, path: "str | os.PathLike[str]") -> None:
        self.path = os.fspath(path)
        self._fd = open_regular_file(self.path, os.O_RDONLY)
        self._map: Optional[mmap.mmap] = None
        try:
            self._open()
        except CheckpointError as error:
            self.close()
            raise error.located(path=self.path)
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        size = os.fstat(self._fd).st_size
        self.file_size = size
        if size < FILE_HEADER_SIZE + TRAILER_SIZE:
            raise TornFileError(f"{size} bytes is shorter than a file header and a trailer")
        self.alignment = parse_file_header(pread_exact(self._fd, 0, FILE_HEADER_SIZE, size))
        try:
            trailer, index = open_commit(self._fd, size, size - TRAILER_SIZE)
        except TornFileError:
            trailer, index = last_commit(self._fd, size)
        self.generation = trailer.generation
        self.committed_length = trailer.file_length
        self.torn_bytes = size - trailer.file_length
        self._index = index
        # Only the committed part is mapped: a torn tail may be cut by an appender at any time.
        self._map = mmap.mmap(self._fd, self.committed_length, access=mmap.ACCESS_READ)
        self._view = memoryview(self._map)
        self._headers: Dict[bytes, BlobHeader] = {}
        # Plane-codec chunks decoded ahead by decode_planes, by blob and chunk, until read.
        self._planes: Dict[str, Dict[int, np.ndarray]] = {}

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Closes the file. Views handed out stay valid (the mapping lives until they are gone)."""
        if self._map is not None:
            try:
                self._view.release()
                self._map.close()
            except (BufferError, AttributeError):
                pass  # arrays still view it: the mapping is unmapped when they are collected
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ContainerFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ listing

    @property
    def metadata(self) -> Dict[str, str]:
        """The file-level metadata of the commit that was opened."""
        return dict(self._index.metadata)

    def names(self) -> List[str]:
        """Live blob names, sorted by their UTF-8 bytes."""
        return [self._index.by_name[k].name for k in sorted(self._index.by_name)]

    def __contains__(self, name: str) -> bool:
        return name.encode("utf-8") in self._index.by_name

    def __len__(self) -> int:
        return len(self._index.by_name)

    def entry(self, name: str) -> Entry:
        """The index entry of ``name`` (dtype, shape, codec… as the index states them); raises BlobNotFoundError."""
        found = self._index.by_name.get(name.encode("utf-8"))
        if found is None:
            raise BlobNotFoundError("no such blob", path=self.path, blob=name)
        return found

    def dtype_name(self, name: str) -> str:
        """The blob's dtype name (``F32``, ``BF16``…)."""
        entry = self.entry(name)
        dtype = _dtypes.DTYPES.get(entry.dtype)
        return dtype.name if dtype else f"unknown dtype id {entry.dtype}"

    def shape(self, name: str) -> Tuple[int, ...]:
        return self.entry(name).shape

    # ------------------------------------------------------------------ records

    def header(self, name: str) -> BlobHeader:
        """Checks blob ``name``'s record frame and blob header against the index and returns the header."""
        entry = self.entry(name)
        key = name.encode("utf-8")
        cached = self._headers.get(key)
        if cached is not None:
            return cached
        try:
            header = self._check_record(entry)
        except CheckpointError as error:
            raise error.located(path=self.path, blob=name)
        self._headers[key] = header
        return header

    def _check_record(self, entry: Entry) -> BlobHeader:
        if entry.kind != KIND_BLOB:
            raise UnsupportedError(f"unsupported record kind {entry.kind}", offset=entry.record_offset)
        if entry.dtype not in _dtypes.DTYPES:
            raise UnsupportedError(f"unknown dtype id {entry.dtype}", offset=entry.record_offset)
        if entry.codec not in CODECS:
            raise UnsupportedError(f"unknown codec id {entry.codec}", offset=entry.record_offset)
        if entry.filter not in (FILTER_NONE, FILTER_SHUFFLE, FILTER_ROTATE_SHUFFLE):
            raise UnsupportedError(f"unknown filter id {entry.filter}", offset=entry.record_offset)
        view = self._view
        offset = entry.record_offset
        frame = parse_frame(bytes(view[offset:offset + FRAME_SIZE]), offset)
        if frame.kind != KIND_BLOB:
            raise UnsupportedError(f"unsupported record kind {frame.kind}", offset=offset)
        if (frame.header_length != entry.header_length or offset + frame.payload_start != entry.payload_offset
                or frame.payload_length != entry.stored_size or frame.padding_length >= self.alignment):
            raise CorruptFileError("record frame lengths disagree with the index", offset=offset)
        header_offset = offset + FRAME_SIZE
        raw_header = bytes(view[header_offset:header_offset + frame.header_length])
        try:
            header = parse_blob_header(raw_header)
        except CheckpointError as error:
            error.offset = header_offset + (error.offset or 0)
            raise
        if header.length != frame.header_length:
            raise CorruptFileError(f"blob header length {header.length}, the frame says {frame.header_length}",
                                   offset=header_offset)
        padding_start = header_offset + frame.header_length
        if any(view[padding_start:padding_start + frame.padding_length]):
            raise CorruptFileError("record padding is not zero", offset=padding_start)
        if (header.name.encode("utf-8") != entry.name.encode("utf-8") or header.dtype != entry.dtype
                or header.shape != entry.shape or header.codec != entry.codec or header.level != entry.level
                or header.filter != entry.filter or header.element_size != entry.element_size
                or header.raw_size != entry.raw_size or header.raw_crc != entry.raw_crc
                or header.stored_size != frame.payload_length):
            raise CorruptFileError("blob header disagrees with the index", offset=header_offset)
        combined = header.payload_crc()
        if combined != frame.payload_crc:
            raise ChecksumError("record payload (combined chunk CRCs)", frame.payload_crc, combined, offset=offset + 24)
        return header

    def payload(self, name: str) -> memoryview:
        """The stored payload bytes of ``name`` (a slice of the mapping; checked record, unverified bytes)."""
        entry = self.entry(name)
        self.header(name)
        return self._view[entry.payload_offset:entry.payload_offset + entry.stored_size]

    # ------------------------------------------------------------------ verification and decoding

    def _verify_stored(self, name: str, header: BlobHeader, payload: memoryview, chunks: Optional[range] = None) -> None:
        """Checks the chunk CRCs of ``chunks`` (all by default) over the stored bytes."""
        entry = self.entry(name)
        starts = _chunk_starts(header)
        wanted = chunks if chunks is not None else range(len(header.chunks))

        def check(index: int) -> Optional[Tuple[int, int, int]]:
            start = starts[index]
            stored, expected = header.chunks[index]
            actual = crc32c(payload[start:start + stored])
            return None if actual == expected else (index, expected, actual)

        if header.stored_size >= _PARALLEL_BYTES and len(wanted) > 1:
            results = list(thread_pool().map(check, wanted))
        else:
            results = [check(i) for i in wanted]
        for bad in results:
            if bad is not None:
                index, expected, actual = bad
                raise ChecksumError(f"chunk {index}", expected, actual, path=self.path, blob=name,
                                    offset=entry.payload_offset + starts[index])
        if chunks is None and header.stored_raw and header.raw_crc != header.payload_crc():
            raise ChecksumError("raw (combined chunk CRCs)", header.raw_crc, header.payload_crc(), path=self.path,
                                blob=name, offset=entry.record_offset + FRAME_SIZE + 56)

    def raw_view(self, name: str, *, verify: bool = True) -> memoryview:
        """The raw bytes of an uncompressed (stored-raw) blob, in place: no copy.

        Raises NotViewableError for a compressed blob, ChecksumError on a CRC mismatch (unless ``verify=False``).
        """
        header = self.header(name)
        if not header.stored_raw:
            raise NotViewableError(f"stored with {CODECS[header.codec].name}: decode it instead", path=self.path, blob=name)
        payload = self.payload(name)
        if verify:
            self._verify_stored(name, header, payload)
        return payload

    def private_view(self, name: str, *, verify: bool = True) -> memoryview:
        """The raw bytes of an uncompressed blob in a mapping of its own, private and writable
        (copy-on-write: writes never reach the file, nor any other view). What torch tensors use."""
        header = self.header(name)
        if not header.stored_raw:
            raise NotViewableError(f"stored with {CODECS[header.codec].name}: decode it instead", path=self.path, blob=name)
        entry = self.entry(name)
        start = entry.payload_offset - entry.payload_offset % mmap.ALLOCATIONGRANULARITY
        if entry.stored_size == 0:
            return memoryview(bytearray())
        private = mmap.mmap(self._fd, entry.payload_offset + entry.stored_size - start, access=mmap.ACCESS_COPY,
                            offset=start)
        view = memoryview(private)[entry.payload_offset - start:]
        if verify:
            self._verify_stored(name, header, view)
        return view

    def read_bytes(self, name: str, *, verify: bool = True, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The decoded raw bytes of ``name`` as a fresh uint8 array (into ``out`` when given)."""
        header = self.header(name)
        entry = self.entry(name)
        # Chunks decode_planes decoded ahead (taken now, so that a failure below drops them too).
        prefetched = self._planes.pop(name, None)
        if verify and not header.stored_raw:
            # Stored bytes first (cheap: they are the compressed ones), so that damage is
            # reported before anything is allocated for the declared raw size.
            self._verify_stored(name, header, self.payload(name))
        if out is None:
            self._check_raw_limit(name, header)
            out = np.empty(header.raw_size, dtype=np.uint8)
        elif out.nbytes != header.raw_size or out.dtype != np.uint8:
            raise CheckpointError(f"destination of {out.nbytes} bytes for a blob of {header.raw_size}",
                                  path=self.path, blob=name)
        if header.stored_raw:
            if header.raw_size:
                self._read_raw_into(name, header, entry, out, verify)
            return out
        codec = CODECS[header.codec]
        payload = self.payload(name)
        starts = _chunk_starts(header)
        # The plane codec decodes many chunks at once (its streams run in lockstep): a batch of
        # the blob's compressed chunks at a time (or all, when decode_planes did it ahead).
        planes: Dict[int, np.ndarray] = prefetched or {}

        def decode(index: int) -> int:
            start = starts[index]
            stored = header.chunks[index][0]
            chunk = payload[start:start + stored]
            raw_length = header.chunk_raw_length(index)
            where = entry.payload_offset + start
            target = out[index * header.chunk_size:index * header.chunk_size + raw_length]
            if stored == raw_length:
                target[...] = np.frombuffer(chunk, dtype=np.uint8)
            else:
                if index in planes:
                    decoded: object = planes.pop(index)
                else:
                    try:
                        decoded = codec.decompress(chunk, raw_length)  # type: ignore[misc]
                    except CheckpointError as error:
                        raise CorruptFileError(f"chunk {index}: {error.reason}", path=self.path, blob=name,
                                               offset=where) from None
                unfilter(decoded, header.filter, header.element_size, target)
            return crc32c(target) if verify else 0

        def decode_all(indices: List[int]) -> List[int]:
            if header.raw_size >= _PARALLEL_BYTES and len(indices) > 1:
                return list(thread_pool().map(decode, indices))
            return [decode(i) for i in indices]

        if header.codec == PLANES_ID and prefetched is None:
            crcs: List[int] = []
            # Chunks stored raw cost nothing to hold: they only ride along in a batch.
            sizes = (0 if stored == header.chunk_raw_length(i) else header.chunk_raw_length(i)
                     for i, (stored, _) in enumerate(header.chunks))
            for batch in plane_batches(enumerate(sizes)):
                planes = self._decode_planes([name], only=batch)[name]
                crcs += decode_all(batch)
        else:
            crcs = decode_all(list(range(len(header.chunks))))
        if verify:
            raw_crc = 0
            for index, crc in enumerate(crcs):
                raw_crc = combine(raw_crc, crc, header.chunk_raw_length(index))
            if raw_crc != header.raw_crc:
                raise ChecksumError("raw", header.raw_crc, raw_crc, path=self.path, blob=name,
                                    offset=entry.record_offset + FRAME_SIZE + 56)
        return out

    def decode_planes(self, names: List[str], *, verify: bool = True) -> None:
        """Decodes the plane-codec chunks (codec 5) of the blobs ``names`` together, for the
        next ``read_bytes`` / ``array`` of each: its Huffman streams are decoded in lockstep, so
        one pass over many blobs costs far fewer numpy calls than one pass per blob
        (``load_file`` does this). Holds the decoded (still filtered) chunks until then."""
        wanted = [n for n in names if self.entry(n).codec == PLANES_ID and n not in self._planes]
        for name in wanted:
            header = self.header(name)
            self._check_raw_limit(name, header)
            if verify and not header.stored_raw:
                self._verify_stored(name, header, self.payload(name))
        self._planes.update(self._decode_planes(wanted))

    def _check_raw_limit(self, name: str, header: BlobHeader) -> None:
        """Refuses a blob whose declared raw size exceeds ``max_raw_size`` before anything is allocated for it."""
        if header.raw_size > self.max_raw_size:
            raise CheckpointError(f"raw size {header.raw_size} exceeds the limit of {self.max_raw_size} bytes "
                                  "(ContainerFile.max_raw_size)", path=self.path, blob=name,
                                  offset=self.entry(name).record_offset + FRAME_SIZE + 24)

    def _decode_planes(self, names: List[str], only: Optional[List[int]] = None) -> Dict[str, Dict[int, np.ndarray]]:
        """The decoded compressed chunks of the plane-codec blobs ``names`` (of their chunks
        ``only``, when given), by blob and chunk, in batches of at most _PLANES_BATCH_BYTES raw bytes."""
        result: Dict[str, Dict[int, np.ndarray]] = {name: {} for name in names}
        # (blob, chunk, stored bytes, raw length) of every compressed chunk, with its raw length as its size.
        chunks: List[Tuple[Tuple[str, int, memoryview, int], int]] = []
        for name in names:
            header = self.header(name)
            if header.stored_raw:
                continue
            payload = self.payload(name)
            starts = _chunk_starts(header)
            for index in (range(len(header.chunks)) if only is None else only):
                stored = header.chunks[index][0]
                raw_length = header.chunk_raw_length(index)
                if stored != raw_length:
                    chunks.append(((name, index, payload[starts[index]:starts[index] + stored], raw_length), raw_length))
        for batch in plane_batches(chunks):
            try:
                decoded = decode_chunks([(chunk, raw_length) for _, _, chunk, raw_length in batch])
            except PlaneError as error:
                name, index, _, _ = batch[error.chunk]
                where = self.entry(name).payload_offset + _chunk_starts(self.header(name))[index]
                raise CorruptFileError(f"chunk {index}: {error.reason}", path=self.path, blob=name,
                                       offset=where) from None
            for (name, index, _, _), chunk in zip(batch, decoded):
                result[name][index] = chunk
        return result

    def _read_raw_into(self, name: str, header: BlobHeader, entry: Entry, out: np.ndarray, verify: bool) -> None:
        """pread of a stored-raw payload into ``out``, each chunk checksummed while it is in cache."""
        fd = self._fd
        starts = _chunk_starts(header)

        piece = _READ_PIECE

        def read(index: int) -> Optional[Tuple[int, int, int]]:
            start = starts[index]
            stored, expected = header.chunks[index]
            target = memoryview(out[start:start + stored])  # type: ignore[arg-type]
            done = 0
            actual = 0
            # In pieces small enough to be checksummed while they are still in the core's cache.
            while done < stored:
                n = os.preadv(fd, [target[done:done + piece]], entry.payload_offset + start + done)
                if n <= 0:
                    raise TornFileError("the file ended inside a payload", path=self.path, blob=name,
                                        offset=entry.payload_offset + start + done)
                if verify:
                    actual = crc32c(target[done:done + n], actual)
                done += n
            if verify and actual != expected:
                return (index, expected, actual)
            return None

        if header.raw_size >= _PARALLEL_BYTES and len(header.chunks) > 1:
            results = list(thread_pool().map(read, range(len(header.chunks))))
        else:
            results = [read(i) for i in range(len(header.chunks))]
        for bad in results:
            if bad is not None:
                index, expected, actual = bad
                raise ChecksumError(f"chunk {index}", expected, actual, path=self.path, blob=name,
                                    offset=entry.payload_offset + starts[index])
        if verify and header.raw_crc != header.payload_crc():
            raise ChecksumError("raw (combined chunk CRCs)", header.raw_crc, header.payload_crc(), path=self.path,
                                blob=name, offset=entry.record_offset + FRAME_SIZE + 56)

    def array(self, name: str, *, verify: bool = True, copy: bool = False, private: bool = False) -> np.ndarray:
        """Blob ``name`` as a numpy array.

        An uncompressed blob of a byte-sized dtype is a zero-copy, read-only view
        of the mapping unless ``copy`` is true (then an owned array) or
        ``private`` is (then a writable copy-on-write mapping of its own); anything else (compressed blobs,
        F4/F6 which unpack, STRING which decodes to ``str`` objects) is a fresh
        array. With ``verify`` (the default) every chunk CRC32C and the raw
        CRC32C are checked first.
        """
        header = self.header(name)
        dtype = _dtypes.DTYPES[header.dtype]
        elements = 1
        for d in header.shape:
            elements *= d
        if header.stored_raw and not copy and dtype.bits >= 8:
            raw = self.private_view(name, verify=verify) if private else self.raw_view(name, verify=verify)
            flat = np.frombuffer(raw, dtype=np.uint8)
        else:
            flat = self.read_bytes(name, verify=verify)
        try:
            if dtype.id == _dtypes.STRING.id:
                return _dtypes.decode_strings(memoryview(flat), elements).reshape(header.shape)
            if dtype.packed:
                return _dtypes.unpack_subbyte(flat, dtype, elements).reshape(header.shape)
        except CheckpointError as error:
            raise error.located(path=self.path, blob=name, offset=self.entry(name).payload_offset)
        return flat.view(dtype.numpy).reshape(header.shape)

    def verify(self) -> Dict[str, Optional[CheckpointError]]:
        """Checks every live blob completely (record, header, every CRC, the zero gap after its payload);
        returns each name's error or None. Reads every payload."""
        results: Dict[str, Optional[CheckpointError]] = {}
        for name in self.names():
            try:
                self.read_bytes(name, verify=True)
                entry = self.entry(name)
                end = entry.payload_offset + entry.stored_size
                if any(self._view[end:align_up(end, UNIT_ALIGNMENT)]):
                    raise CorruptFileError("the gap after the payload is not zero", path=self.path, blob=name,
                                           offset=end)
                results[name] = None
            except CheckpointError as error:
                results[name] = error
        return results


T = TypeVar("T")


def plane_batches(items: Iterable[Tuple[T, int]]) -> List[List[T]]:
    """``items`` in order, cut into batches whose sizes (the raw bytes each holds decoded)
    add up to at most _PLANES_BATCH_BYTES (an item larger than that alone); items of size 0
    never start a batch. What the plane codec decodes in one lockstep pass and holds at once."""
    batches: List[List[T]] = [[]]
    held = 0
    for item, size in items:
        if size and held and held + size > _PLANES_BATCH_BYTES:
            batches.append([])
            held = 0
        held += size
        batches[-1].append(item)
    return batches if batches[0] else []


def _chunk_starts(header: BlobHeader) -> List[int]:
    """Payload offset of each chunk."""
    starts = []
    position = 0
    for stored, _ in header.chunks:
        starts.append(position)
        position += stored
    return starts
