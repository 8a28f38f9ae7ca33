"""Recovery of torn or damaged container files (FORMAT.md §4.8).

``scan`` reports, read-only, what a repair keeps; ``repair`` cuts the file
where the walk stopped (never before the end of the last complete commit)
and writes a fresh index and trailer there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ._codecs import CODECS, unfilter
from ._crc import combine, crc32c
from ._format import (FILE_HEADER_SIZE, FRAME_SIZE, KIND_BLOB, KIND_DELETION, KIND_INDEX, TRAILER_SIZE,
                      UNIT_ALIGNMENT, BlobHeader, Entry, Frame, align_up, parse_blob_header, parse_deletion_header,
                      parse_file_header, parse_frame, parse_index)
from ._reader import last_commit, open_commit, open_regular_file, pread_exact, walk_units
from ._writer import ContainerWriter, EncodeOptions, WriterLock, _check_durability
from .errors import ChecksumError, CheckpointError, CorruptFileError, TornFileError, UnsupportedError


@dataclass
class DamagedRecord:
    """A record recovery skips: its name when known, its frame's offset, what is wrong."""

    name: Optional[str]
    offset: int
    error: CheckpointError


@dataclass
class RecoveryReport:
    """What a recovery scan found (the fields of the Swift ``RecoveryReport``)."""

    blob_names: List[str]
    blob_records: int
    deletions: int
    commits: int
    intact_length: int
    file_length: int
    stop_reason: Optional[str]
    metadata: Dict[str, str]
    base_generation: Optional[int]
    damaged_records: List[DamagedRecord] = field(default_factory=list)
    lost_blobs: List[str] = field(default_factory=list)

    @property
    def keeps_everything(self) -> bool:
        """True when nothing damaged was dropped or skipped."""
        return not self.damaged_records


def _require_zeros(fd: int, size: int, offset: int, count: int, what: str) -> None:
    if count > 0 and any(pread_exact(fd, offset, count, size)):
        raise CorruptFileError(f"{what} is not zero", offset=offset)


def verify_payload(header: BlobHeader, payload: bytes, payload_offset: int) -> None:
    """Checks every chunk CRC, decodes every compressed chunk and checks the raw CRC (one chunk in memory at a time)."""
    codec = CODECS[header.codec]
    position = 0
    raw_crc = 0
    for index, (stored, expected) in enumerate(header.chunks):
        chunk = memoryview(payload)[position:position + stored]
        actual = crc32c(chunk)
        if actual != expected:
            raise ChecksumError(f"chunk {index}", expected, actual, offset=payload_offset + position)
        raw_length = header.chunk_raw_length(index)
        if stored == raw_length:
            raw_crc = combine(raw_crc, actual, raw_length)
        else:
            try:
                decoded = codec.decompress(chunk, raw_length)  # type: ignore[misc]
            except CheckpointError as error:
                raise CorruptFileError(f"chunk {index}: {error.reason}", offset=payload_offset + position) from None
            raw_crc = combine(raw_crc, crc32c(unfilter(decoded, header.filter, header.element_size)), raw_length)
        position += stored
    if raw_crc != header.raw_crc:
        raise ChecksumError("raw", header.raw_crc, raw_crc, offset=payload_offset)


def check_blob_record(fd: int, size: int, offset: int, frame: Frame) -> Entry:
    """Fully checks a blob record (header, zero padding and gap, every CRC) and describes it as an index entry."""
    header_bytes = pread_exact(fd, offset + FRAME_SIZE, frame.header_length, size)
    try:
        header = parse_blob_header(header_bytes)
    except CheckpointError as error:
        error.offset = offset + FRAME_SIZE + (error.offset or 0)
        raise
    if header.length != frame.header_length:
        raise CorruptFileError("blob header length disagrees with the frame", offset=offset + 8)
    if header.stored_size != frame.payload_length:
        raise CorruptFileError("payload length disagrees with the blob header", offset=offset + 16)
    combined = header.payload_crc()
    if combined != frame.payload_crc:
        raise ChecksumError("record payload (combined chunk CRCs)", frame.payload_crc, combined, offset=offset + 24)
    payload_offset = offset + frame.payload_start
    _require_zeros(fd, size, offset + FRAME_SIZE + frame.header_length, frame.padding_length, "record padding")
    payload_end = payload_offset + frame.payload_length
    _require_zeros(fd, size, payload_end, min(align_up(payload_end, UNIT_ALIGNMENT), size) - payload_end,
                   "gap after the payload")
    payload = pread_exact(fd, payload_offset, frame.payload_length, size)
    verify_payload(header, payload, payload_offset)
    return Entry(header.name, KIND_BLOB, offset, payload_offset, header.stored_size, header.raw_size, frame.header_length,
                 header.raw_crc, header.dtype, header.codec, header.level, header.filter, header.element_size,
                 tuple(header.shape))


def _check_indexed(fd: int, size: int, entry: Entry) -> Entry:
    if entry.kind != KIND_BLOB:
        raise UnsupportedError(f"unsupported record kind {entry.kind}", offset=entry.record_offset)
    frame = parse_frame(pread_exact(fd, entry.record_offset, FRAME_SIZE, size), entry.record_offset)
    if frame.kind != KIND_BLOB:
        raise UnsupportedError(f"unsupported record kind {frame.kind}", offset=entry.record_offset)
    record = check_blob_record(fd, size, entry.record_offset, frame)
    same = (record.name.encode() == entry.name.encode() and record.dtype == entry.dtype and record.shape == entry.shape
            and record.codec == entry.codec and record.level == entry.level and record.filter == entry.filter
            and record.element_size == entry.element_size and record.raw_size == entry.raw_size
            and record.stored_size == entry.stored_size and record.raw_crc == entry.raw_crc
            and record.payload_offset == entry.payload_offset and record.header_length == entry.header_length)
    if not same:
        raise CorruptFileError("blob header disagrees with the index", offset=entry.record_offset)
    return record


def _scan(path: str) -> Tuple[RecoveryReport, List[Entry], int, int]:
    fd = open_regular_file(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        alignment = parse_file_header(pread_exact(fd, 0, FILE_HEADER_SIZE, size))
        report = RecoveryReport([], 0, 0, 0, FILE_HEADER_SIZE, size, None, {}, None)
        live: Dict[bytes, Optional[Entry]] = {}  # None: lost
        highest = 0
        walk_start = FILE_HEADER_SIZE
        base = None
        if size >= FILE_HEADER_SIZE + TRAILER_SIZE:
            try:
                base = open_commit(fd, size, size - TRAILER_SIZE)
            except CheckpointError:
                try:
                    base = last_commit(fd, size)
                except CheckpointError:
                    base = None
        if base is not None:
            trailer, index = base
            report.base_generation = trailer.generation
            report.commits = 1
            report.metadata = dict(index.metadata)
            highest = trailer.generation
            for entry in index.entries:
                key = entry.name.encode("utf-8")
                try:
                    live[key] = _check_indexed(fd, size, entry)
                    report.blob_records += 1
                except CheckpointError as error:
                    live[key] = None
                    report.damaged_records.append(DamagedRecord(entry.name, entry.record_offset,
                                                                error.located(blob=entry.name)))
            walk_start = trailer.file_length
            report.intact_length = walk_start
        stop: List[str] = []
        for kind, offset, value in walk_units(fd, size, walk_start, stop):
            if kind == "trailer":
                report.commits += 1
                highest = max(highest, value.generation)  # type: ignore[attr-defined]
                report.intact_length = offset + TRAILER_SIZE
                continue
            frame: Frame = value  # type: ignore[assignment]
            if frame.kind == KIND_BLOB:
                try:
                    record = check_blob_record(fd, size, offset, frame)
                    live[record.name.encode("utf-8")] = record
                    report.blob_records += 1
                except CheckpointError as error:
                    name = None
                    try:
                        name = parse_blob_header(pread_exact(fd, offset + FRAME_SIZE, frame.header_length, size)).name
                    except CheckpointError:
                        pass
                    if name is not None and report.base_generation is None:
                        live[name.encode("utf-8")] = None
                    report.damaged_records.append(DamagedRecord(name, offset, error.located(blob=name)))
            elif frame.kind == KIND_DELETION:
                try:
                    if frame.padding_length or frame.payload_length or frame.payload_crc:
                        raise CorruptFileError("deletion marker with padding or payload", offset=offset)
                    name = parse_deletion_header(pread_exact(fd, offset + FRAME_SIZE, frame.header_length, size))
                    live.pop(name.encode("utf-8"), None)
                    report.deletions += 1
                except CheckpointError as error:
                    report.damaged_records.append(DamagedRecord(None, offset, error.located(offset=offset)))
            elif frame.kind == KIND_INDEX:
                try:
                    body = pread_exact(fd, offset + frame.payload_start, frame.payload_length, size)
                    if crc32c(body) == frame.payload_crc and len(body) >= 16:
                        generation = int.from_bytes(body[8:16], "little")
                        report.metadata = dict(parse_index(body, offset, generation).metadata)
                except CheckpointError:
                    pass
            else:
                report.damaged_records.append(DamagedRecord(
                    None, offset, UnsupportedError(f"unsupported record kind {frame.kind}", offset=offset)))
            report.intact_length = offset + frame.length
        report.stop_reason = stop[0] if stop else None
        kept = sorted((e for e in live.values() if e is not None), key=lambda e: e.record_offset)
        report.blob_names = sorted((e.name for e in kept), key=lambda n: n.encode("utf-8"))
        report.lost_blobs = sorted((k.decode("utf-8") for k, e in live.items() if e is None), key=str.encode)
        return report, kept, highest, alignment
    except CheckpointError as error:
        raise error.located(path=path)
    finally:
        os.close(fd)


def scan(path: "str | os.PathLike[str]") -> RecoveryReport:
    """Reads ``path`` and reports what ``repair`` would keep (FORMAT.md §4.8); changes nothing."""
    return _scan(os.fspath(path))[0]


def repair(path: "str | os.PathLike[str]", durability: str = "data") -> RecoveryReport:
    """Rebuilds ``path``'s index from its intact records, in place, under the writer lock.

    Keeps every blob of the last complete commit whose record verifies, then
    every intact record after it in file order (newest wins, deletions
    apply); cuts the file where the walk stopped (never before the end of the
    last complete commit) and writes an index and a trailer with generation =
    the highest seen + 1. Returns the report; ``report.keeps_everything`` is
    False when something was dropped.
    """
    path = os.fspath(path)
    _check_durability(durability)
    lock = WriterLock(path)
    try:
        report, kept, highest, alignment = _scan(path)
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        try:
            os.ftruncate(fd, report.intact_length)
        except BaseException:
            os.close(fd)
            raise
    except BaseException:
        lock.release()
        raise
    writer = ContainerWriter(path, fd=fd, lock=lock, temporary=None, alignment=alignment,
                             position=report.intact_length, generation=highest + 1, entries=kept,
                             metadata=report.metadata, options=EncodeOptions(), durability=durability)
    try:
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return report


__all__ = ["scan", "repair", "RecoveryReport", "DamagedRecord", "TornFileError"]
