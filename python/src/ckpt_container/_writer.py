"""Writing container files (FORMAT.md §4): new files committed atomically, and appends.

A new file is written as ``DIR/.BASE.tmp.PID.RANDOM``, synced and renamed
into place (then the directory is synced), under an exclusive ``flock`` of
``PATH.lock`` (FORMAT.md §6.3). An append writes new records after the
current trailer and a new index and trailer last. Byte for byte, a file
written here with the options of the Swift writer is the file the Swift
writer writes (same record order, padding, chunking, codec streams).
"""

from __future__ import annotations

import fcntl
import os
import secrets
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _dtypes
from ._codecs import (CODECS, FILTER_NONE, FILTER_ROTATE_SHUFFLE, FILTER_SHUFFLE, PLANES_ID, Codec, apply_filter,
                      parse_codec)
from ._planes import encode_chunk
from ._crc import combine, crc32c
from ._format import (AUTO_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, FILE_HEADER_SIZE, FRAME_SIZE, KIND_BLOB, KIND_DELETION, KIND_INDEX,
                      MAX_CHUNK_SIZE, UNIT_ALIGNMENT, BlobHeader, Entry, Frame, Trailer, align_up, chunk_count,
                      check_name, encode_blob_header, encode_deletion_header, encode_file_header, encode_index,
                      valid_alignment)
from ._reader import ContainerFile, thread_pool
from .errors import BlobNotFoundError, CheckpointError, UnsupportedError, WriterLockedError

DURABILITIES = ("none", "data", "full")
SHUFFLE_MODES = ("auto", "on", "off")
_SMALL_WRITE = 1 << 20  # payloads below this are batched with their record's header


@dataclass(frozen=True)
class EncodeOptions:
    """How blobs are encoded; the defaults are the Swift writer's (uncompressed, 4 MiB chunks).

    Attributes:
        codec: ``none``, ``lz4``, ``lz4hc``, ``zlib``, ``zstd`` (optionally with ``-LEVEL``),
            ``planes`` (the byte-plane codec, FORMAT.md §3.10), or ``auto`` (the recommended
            one, as ``ckpt --codec auto``: planes for floating-point dtypes, the rest uncompressed).
        level: the codec level (default: the codec's, as ``ckpt`` picks it: lz4hc 9, zlib 6, zstd 1).
        shuffle: ``auto`` (floating-point dtypes), ``on`` (every dtype wider than a byte) or ``off``.
            With ``planes``, floats of 2, 4 or 8 bytes get rotate + shuffle (§3.4.1) unless ``off``.
        chunk_size: raw bytes per chunk, a multiple of 16 in 16…1 GiB; None: 1 MiB for ``auto``
            (as ``ckpt``), else 4 MiB.
        skip_incompressible: when chunk 0 of a blob does not shrink, store every chunk raw without trying.
    """

    codec: str = "none"
    level: Optional[int] = None
    shuffle: str = "auto"
    chunk_size: Optional[int] = None
    skip_incompressible: bool = True

    @property
    def is_auto(self) -> bool:
        return self.codec.lower() == "auto"

    @property
    def chunk_bytes(self) -> int:
        """The chunk size in use."""
        if self.chunk_size is not None:
            return self.chunk_size
        return AUTO_CHUNK_SIZE if self.is_auto else DEFAULT_CHUNK_SIZE

    def resolved(self, dtype: Optional[_dtypes.DType] = None) -> Tuple[Codec, int]:
        """The codec and level for a blob of ``dtype`` (checks every option)."""
        if self.is_auto:
            if self.level is not None:
                raise CheckpointError("level does not apply to codec 'auto'")
            codec, level = CODECS[PLANES_ID] if dtype is None or dtype.is_float else CODECS[0], 0
        else:
            codec, level = parse_codec(self.codec, self.level)
        if self.shuffle not in SHUFFLE_MODES:
            raise CheckpointError(f"shuffle must be one of {SHUFFLE_MODES}, not {self.shuffle!r}")
        chunk = self.chunk_bytes
        if not (16 <= chunk <= MAX_CHUNK_SIZE and chunk % 16 == 0):
            raise CheckpointError(f"chunk size {chunk} is not a multiple of 16 in 16…{MAX_CHUNK_SIZE}")
        return codec, level

    def filter_for(self, dtype: _dtypes.DType, codec: Codec) -> Tuple[int, int]:
        """The filter (id, element size) this mode picks for ``dtype`` (never with codec none)."""
        if codec.id == 0 or dtype.shuffle_size is None or self.shuffle == "off":
            return FILTER_NONE, 0
        if codec.id == PLANES_ID and dtype.is_float and dtype.shuffle_size in (2, 4, 8):
            return FILTER_ROTATE_SHUFFLE, dtype.shuffle_size
        if self.shuffle == "on" or dtype.is_float:
            return FILTER_SHUFFLE, dtype.shuffle_size
        return FILTER_NONE, 0


@dataclass
class PreparedBlob:
    """A blob's raw bytes in the form the file stores them."""

    name: str
    dtype: _dtypes.DType
    shape: Tuple[int, ...]
    raw: memoryview  # contiguous bytes (a view of the caller's array where possible)
    keep_alive: Any


def prepare_array(name: str, value: Any) -> PreparedBlob:
    """Turns a numpy array, a torch tensor, ``bytes`` (RAW) or an array of ``str`` (STRING) into raw bytes.

    Contiguous little-endian arrays are not copied.
    """
    check_name(name)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = memoryview(value).cast("B")
        return PreparedBlob(name, _dtypes.RAW, (raw.nbytes,), raw, value)
    if type(value).__module__.startswith("torch"):
        from .torch import _torch_to_numpy
        value = _torch_to_numpy(value, name)
    array = np.asarray(value)
    dtype = _dtypes.dtype_for_array(array, name=name)
    shape = tuple(int(d) for d in array.shape)
    if dtype.id == _dtypes.STRING.id:
        data = _dtypes.encode_strings(array)
        return PreparedBlob(name, dtype, shape, memoryview(data), data)
    if dtype.packed:
        packed = _dtypes.pack_subbyte(array, dtype)
        return PreparedBlob(name, dtype, shape, memoryview(packed).cast("B"), packed)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    array = np.ascontiguousarray(array)
    flat = array.reshape(-1).view(np.uint8) if array.size else np.empty(0, dtype=np.uint8)
    return PreparedBlob(name, dtype, shape, memoryview(flat), array)


class WriterLock:
    """An exclusive ``flock`` on ``PATH.lock`` (FORMAT.md §6.3); deleted again before release."""

    def __init__(self, path: str) -> None:
        self.lock_path = path + ".lock"
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise WriterLockedError("another writer holds the lock", path=path) from None
            held = os.fstat(fd)
            try:
                now = os.stat(self.lock_path)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                self.fd = fd
                return
            os.close(fd)  # the holder deleted it between our open and flock: start over

    def release(self) -> None:
        if self.fd >= 0:
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                pass
            os.close(self.fd)
            self.fd = -1


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    done = 0
    total = view.nbytes
    while done < total:
        written = os.pwrite(fd, view[done:], offset + done)
        if written <= 0:
            raise OSError("pwrite wrote nothing")
        done += written


class ContainerWriter:
    """Writes a container file: a new one (``create``) or an append (``append``).

    ::

        with ContainerWriter.create("model.ckpt") as w:   # commit() on success, abort() on error
            w.metadata["epoch"] = "3"
            w.write("layers.0.weight", weights)

    Blobs are written as records when ``write`` is called (the caller's array
    may change afterwards); ``commit`` writes the index and trailer and, for a
    new file, renames it into place. A name written twice keeps the newer blob;
    ``delete`` writes a deletion marker.

    Args (of ``create`` / ``append``):
        options: how blobs are encoded by default (``EncodeOptions``).
        alignment: payload alignment of a new file (power of two, 8…4096; an append keeps the file's).
        durability: ``none`` (page cache only), ``data`` (fdatasync) or ``full`` (fsync, and the
            directory after a rename).
    """

    def __init__(self, path: str, *, fd: int, lock: WriterLock, temporary: Optional[str], alignment: int,
                 position: int, generation: int, entries: List[Entry], metadata: Dict[str, str],
                 options: EncodeOptions, durability: str) -> None:
        self.path = path
        self._fd = fd
        self._lock = lock
        self._temporary = temporary
        self.alignment = alignment
        self._original_length = position
        self._position = position
        self._generation = generation
        self._entries: Dict[bytes, Entry] = {e.name.encode("utf-8"): e for e in entries}  # record order
        self.metadata: Dict[str, str] = dict(metadata)
        self.options = options
        self.durability = durability
        self._state = "open"
        self._pending = bytearray()
        self._pending_offset = position

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(cls, path: "str | os.PathLike[str]", *, options: Optional[EncodeOptions] = None, alignment: int = 64,
               durability: str = "full") -> "ContainerWriter":
        """Starts a new file that replaces ``path`` at ``commit()``; takes ``PATH.lock``."""
        path = os.fspath(path)
        options = options or EncodeOptions()
        options.resolved()
        _check_durability(durability)
        if not valid_alignment(alignment):
            raise CheckpointError(f"alignment {alignment} is not a power of two in 8…4096", path=path)
        lock = WriterLock(path)
        directory, base = os.path.split(os.path.abspath(path))
        temporary = os.path.join(directory, f".{base}.tmp.{os.getpid()}.{secrets.randbits(32):08x}")
        try:
            fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        except BaseException:
            lock.release()
            raise
        writer = cls(path, fd=fd, lock=lock, temporary=temporary, alignment=alignment, position=FILE_HEADER_SIZE,
                     generation=1, entries=[], metadata={}, options=options, durability=durability)
        writer._pending_offset = 0
        writer._pending += encode_file_header(alignment)
        return writer

    @classmethod
    def append(cls, path: "str | os.PathLike[str]", *, options: Optional[EncodeOptions] = None,
               durability: str = "full") -> "ContainerWriter":
        """Opens ``path`` to append to it in place; a torn end is first cut back to the last commit.

        Refuses a file whose index has an entry this version cannot carry over
        (an unknown record kind, dtype, codec or filter), since rewriting the
        index without it would drop a blob.
        """
        path = os.fspath(path)
        options = options or EncodeOptions()
        options.resolved()
        _check_durability(durability)
        lock = WriterLock(path)
        try:
            with ContainerFile(path) as existing:
                entries = sorted(existing._index.entries, key=lambda e: e.record_offset)
                for e in entries:
                    if (e.kind != KIND_BLOB or e.dtype not in _dtypes.DTYPES or e.codec not in CODECS
                            or e.filter not in (FILTER_NONE, FILTER_SHUFFLE, FILTER_ROTATE_SHUFFLE)):
                        raise UnsupportedError("cannot append: an index entry uses a record kind, dtype, codec or "
                                               "filter this version does not know", path=path, blob=e.name)
                length = existing.committed_length
                torn = existing.torn_bytes
                metadata = existing.metadata
                generation = existing.generation + 1
                alignment = existing.alignment
            fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
            if torn:
                os.ftruncate(fd, length)
        except BaseException:
            lock.release()
            raise
        return cls(path, fd=fd, lock=lock, temporary=None, alignment=alignment, position=length,
                   generation=generation, entries=entries, metadata=metadata, options=options, durability=durability)

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> "ContainerWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None and self._state == "open":
            self.commit()
        else:
            self.abort()

    def __del__(self) -> None:
        try:
            self.abort()
        except Exception:
            pass

    # ------------------------------------------------------------------ writing

    @property
    def names(self) -> List[str]:
        """The live blob names so far, sorted by UTF-8 bytes."""
        return [self._entries[k].name for k in sorted(self._entries)]

    def _require_open(self) -> None:
        if self._state == "failed":
            raise CheckpointError("an earlier write or commit failed; call abort()", path=self.path)
        if self._state != "open":
            raise CheckpointError(f"writer already {self._state}", path=self.path)

    def _queue(self, data: Any, offset: int) -> None:
        """Buffers small writes that continue the previous one; writes everything else now."""
        if offset == self._pending_offset + len(self._pending) and len(data) < _SMALL_WRITE:
            self._pending += data
            if len(self._pending) >= 8 << 20:
                self._flush()
            return
        self._flush()
        if len(data) < _SMALL_WRITE:
            self._pending_offset = offset
            self._pending += data
        else:
            _pwrite_all(self._fd, data, offset)
            self._pending_offset = offset + len(data)

    def _flush(self) -> None:
        if self._pending:
            _pwrite_all(self._fd, self._pending, self._pending_offset)
            self._pending_offset += len(self._pending)
            self._pending = bytearray()

    def write(self, name: str, value: Any, *, attributes: Optional[Dict[str, str]] = None,
              options: Optional[EncodeOptions] = None) -> None:
        """Writes one blob (a numpy array, torch tensor, ``bytes`` for RAW, ``str`` array for STRING).

        Raises CheckpointError for invalid input (nothing of that blob is
        written); after a failed write the writer only accepts ``abort()``.
        """
        self._require_open()
        try:
            blob = prepare_array(name, value)
        except CheckpointError as error:
            raise error.located(path=self.path, blob=name)
        options = options or self.options
        codec, level = options.resolved(blob.dtype)
        try:
            if codec.id == 0:
                self._write_uncompressed(blob, options, attributes or {})
            else:
                self._write_encoded(blob, options, codec, level, attributes or {})
        except CheckpointError as error:
            raise error.located(path=self._temporary or self.path, blob=name)
        except BaseException:
            self._state = "failed"
            raise

    def _layout(self, header_length: int) -> Tuple[int, int, int]:
        start = align_up(self._position, UNIT_ALIGNMENT)
        unpadded = start + FRAME_SIZE + header_length
        payload_offset = align_up(unpadded, self.alignment)
        return start, payload_offset - unpadded, payload_offset

    def _write_uncompressed(self, blob: PreparedBlob, options: EncodeOptions, attributes: Dict[str, str]) -> None:
        raw = blob.raw
        size = raw.nbytes
        chunk = options.chunk_bytes
        count = chunk_count(size, chunk)
        header = BlobHeader(blob.dtype.id, 0, 0, FILTER_NONE, 0, blob.shape, blob.name, dict(attributes), size, size,
                            chunk, 0, [(0, 0)] * count)
        header_length = len(encode_blob_header(header))
        start, padding, payload_offset = self._layout(header_length)
        crcs = self._checksum_and_write(raw, chunk, count, payload_offset)
        raw_crc = 0
        for index, crc in enumerate(crcs):
            length = min(chunk, size - index * chunk)
            header.chunks[index] = (length, crc)
            raw_crc = combine(raw_crc, crc, length)
        header.raw_crc = raw_crc
        self._finish_record(header, raw_crc, start, padding, payload_offset, [raw] if size < _SMALL_WRITE else [])

    def _checksum_and_write(self, raw: memoryview, chunk: int, count: int, payload_offset: int) -> List[int]:
        """CRC32C of each chunk; a large payload is also written now, chunk by chunk, from the caller's memory."""
        size = raw.nbytes
        if size < _SMALL_WRITE:
            return [crc32c(raw[i * chunk:(i + 1) * chunk]) for i in range(count)]
        self._flush()
        fd = self._fd

        # Each worker checksums a chunk and writes it from the caller's memory while it is
        # still in cache. (Measured against one sequential writer thread with the CRCs on the
        # pool: that was slower here, on tmpfs and on disk.)
        def work(index: int) -> int:
            piece = raw[index * chunk:(index + 1) * chunk]
            crc = crc32c(piece)
            _pwrite_all(fd, piece, payload_offset + index * chunk)
            return crc

        return list(thread_pool().map(work, range(count)))

    def _write_encoded(self, blob: PreparedBlob, options: EncodeOptions, codec: Codec, level: int,
                       attributes: Dict[str, str]) -> None:
        raw = blob.raw
        size = raw.nbytes
        chunk = options.chunk_bytes
        count = chunk_count(size, chunk)
        filter_id, element_size = options.filter_for(blob.dtype, codec)
        compress = codec.compress

        def encode(index: int, try_compress: bool) -> Tuple[Optional[bytes], int]:
            piece = raw[index * chunk:(index + 1) * chunk]
            raw_crc = crc32c(piece)
            if not try_compress or piece.nbytes <= 1:
                return None, raw_crc
            source: Any = apply_filter(piece, filter_id, element_size)
            if codec.id == PLANES_ID:
                # The plane codec cuts its segments at the planes: it needs the element size.
                stored = encode_chunk(source, element_size)
            else:
                assert compress is not None
                stored = compress(memoryview(source), level)
            return (stored if len(stored) < piece.nbytes else None), raw_crc

        results: List[Tuple[Optional[bytes], int]] = []
        if count:
            first = encode(0, True)
            results.append(first)
            try_rest = first[0] is not None or not options.skip_incompressible
            if count > 1:
                # Like the Swift encoder, every compressed chunk is held until the header
                # (whose chunk table lists their sizes) is written.
                results.extend(thread_pool().map(lambda i: encode(i, try_rest), range(1, count)))
        chunks: List[Tuple[int, int]] = []
        segments: List[Any] = []
        raw_crc = 0
        for index, (stored, crc) in enumerate(results):
            length = min(chunk, size - index * chunk)
            raw_crc = combine(raw_crc, crc, length)
            if stored is None:
                piece = raw[index * chunk:index * chunk + length]
                chunks.append((length, crc))
                segments.append(piece)
            else:
                chunks.append((len(stored), crc32c(stored)))
                segments.append(stored)
        stored_size = sum(s for s, _ in chunks)
        header = BlobHeader(blob.dtype.id, codec.id, level, filter_id, element_size, blob.shape, blob.name,
                            dict(attributes), size, stored_size, chunk, raw_crc, chunks)
        header_length = len(encode_blob_header(header))
        start, padding, payload_offset = self._layout(header_length)
        payload_crc = header.payload_crc()
        self._finish_record(header, payload_crc, start, padding, payload_offset, segments)

    def _finish_record(self, header: BlobHeader, payload_crc: int, start: int, padding: int, payload_offset: int,
                       segments: Sequence[Any]) -> None:
        header_bytes = encode_blob_header(header)
        frame = Frame(KIND_BLOB, len(header_bytes), padding, header.stored_size, payload_crc)
        prefix = bytes(start - self._position) + frame.encode() + header_bytes + bytes(padding)
        self._queue(prefix, self._position)
        offset = payload_offset
        for segment in segments:
            n = memoryview(segment).nbytes
            if n:
                self._queue(segment if n >= _SMALL_WRITE else bytes(segment), offset)
            offset += n
        self._position = payload_offset + header.stored_size
        key = header.name.encode("utf-8")
        self._entries.pop(key, None)
        self._entries[key] = Entry(header.name, KIND_BLOB, start, payload_offset, header.stored_size, header.raw_size,
                                   len(header_bytes), header.raw_crc, header.dtype, header.codec, header.level,
                                   header.filter, header.element_size, tuple(header.shape))

    def delete(self, name: str) -> None:
        """Writes a deletion marker: ``name`` is gone after ``commit()``. Raises BlobNotFoundError."""
        self._require_open()
        key = name.encode("utf-8")
        if key not in self._entries:
            raise BlobNotFoundError("no such blob to delete", path=self.path, blob=name)
        header = encode_deletion_header(name)
        start = align_up(self._position, UNIT_ALIGNMENT)
        frame = Frame(KIND_DELETION, len(header), 0, 0, 0)
        self._queue(bytes(start - self._position) + frame.encode() + header, self._position)
        self._position = start + FRAME_SIZE + len(header)
        del self._entries[key]

    # ------------------------------------------------------------------ commit

    def commit(self) -> None:
        """Writes the index and trailer, syncs as ``durability`` asks and renames a new file into place.

        After an error the previous state of the path is intact and the writer only accepts ``abort()``.
        """
        self._require_open()
        try:
            for key, value in self.metadata.items():
                if not key or len(key.encode("utf-8")) > 65535:
                    raise CheckpointError(f"metadata key {key[:64]!r} is empty or too long", path=self.path)
            if self._temporary is None and self.durability != "none":
                self._flush()
                self._sync()  # records reach the disk before the trailer that makes them live
            entries = list(self._entries.values())
            body = encode_index(entries, self.metadata, self._generation)
            index_start = align_up(self._position, UNIT_ALIGNMENT)
            body_crc = crc32c(body)
            frame = Frame(KIND_INDEX, 0, 0, len(body), body_crc)
            index_length = frame.length
            trailer_offset = align_up(index_start + index_length, UNIT_ALIGNMENT)
            trailer = Trailer(index_start, index_length, self._generation, trailer_offset + 64, body_crc)
            tail = (bytes(index_start - self._position) + frame.encode() + body
                    + bytes(trailer_offset - (index_start + index_length)) + trailer.encode())
            self._queue(tail, self._position)
            self._flush()
            self._position = trailer.file_length
            self._sync()
            if self._temporary is not None:
                os.rename(self._temporary, self.path)
        except BaseException:
            self._state = "failed"
            raise
        self._state = "committed"
        try:
            if self._temporary is not None and self.durability == "full":
                directory = os.path.dirname(os.path.abspath(self.path))
                dfd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        finally:
            os.close(self._fd)
            self._fd = -1
            self._lock.release()

    def _sync(self) -> None:
        if self.durability == "data":
            os.fdatasync(self._fd)
        elif self.durability == "full":
            os.fsync(self._fd)

    def abort(self) -> None:
        """Abandons the writer: a new file's temporary is removed, an append is cut back. Idempotent."""
        if self._state not in ("open", "failed"):
            return
        self._state = "aborted"
        self._pending = bytearray()
        try:
            if self._temporary is not None:
                try:
                    os.unlink(self._temporary)
                except FileNotFoundError:
                    pass
            else:
                os.ftruncate(self._fd, self._original_length)
        finally:
            os.close(self._fd)
            self._fd = -1
            self._lock.release()


def _check_durability(durability: str) -> None:
    if durability not in DURABILITIES:
        raise CheckpointError(f"durability must be one of {DURABILITIES}, not {durability!r}")


def write_file(tensors: Dict[str, Any], path: "str | os.PathLike[str]", *, metadata: Optional[Dict[str, str]] = None,
               options: Optional[EncodeOptions] = None, alignment: int = 64, durability: str = "full") -> None:
    """Writes ``tensors`` as a new container file, blobs in name order (UTF-8 bytes), atomically."""
    if metadata is not None:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise CheckpointError("metadata keys and values must be str", path=os.fspath(path))
    names = sorted(tensors, key=lambda n: n.encode("utf-8"))
    with ContainerWriter.create(path, options=options, alignment=alignment, durability=durability) as writer:
        writer.metadata = dict(metadata or {})
        for name in names:
            writer.write(name, tensors[name])
