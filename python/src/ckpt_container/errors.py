"""The package's one error type and its precise subclasses.

Every error raised for bad input names what a user needs to act on: the
file, the blob (when one is concerned) and the byte offset in the file (when
one is known). ``str(error)`` reads like::

    model.ckpt: blob 'layers.0.weight': offset 4160: chunk 0 CRC32C mismatch (stored 0x1234abcd, computed 0x9f00aa01)
"""

from __future__ import annotations

from typing import Optional


class CheckpointError(Exception):
    """A container file could not be read or written as asked.

    Attributes:
        reason: what is wrong, without the location.
        path: the file, when known.
        blob: the blob name, when one blob is concerned.
        offset: the byte offset in the file where the problem was found, when known.
    """

    def __init__(self, reason: str, *, path: Optional[str] = None, blob: Optional[str] = None,
                 offset: Optional[int] = None) -> None:
        self.reason = reason
        self.path = path
        self.blob = blob
        self.offset = offset
        super().__init__(self._render())

    def _render(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(str(self.path))
        if self.blob is not None:
            parts.append(f"blob {self.blob!r}")
        if self.offset is not None:
            parts.append(f"offset {self.offset}")
        parts.append(self.reason)
        return ": ".join(parts)

    def located(self, *, path: Optional[str] = None, blob: Optional[str] = None,
                offset: Optional[int] = None) -> "CheckpointError":
        """Fills in location fields that are still unknown (never overwrites one) and returns self."""
        if self.path is None and path is not None:
            self.path = path
        if self.blob is None and blob is not None:
            self.blob = blob
        if self.offset is None and offset is not None:
            self.offset = offset
        self.args = (self._render(),)
        return self

    def __str__(self) -> str:
        return self._render()


class CorruptFileError(CheckpointError):
    """A structure violates FORMAT.md (bad magic, bad field, inconsistent sizes, non-zero padding…)."""


class ChecksumError(CorruptFileError):
    """A CRC32C stored in the file does not match the bytes it covers."""

    def __init__(self, what: str, expected: int, actual: int, **location: object) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"{what} CRC32C mismatch (stored 0x{expected:08x}, computed 0x{actual:08x})",
                         **location)  # type: ignore[arg-type]


class TornFileError(CorruptFileError):
    """The file has no complete commit (FORMAT.md §4.8): recovery may salvage its records."""


class UnsupportedError(CheckpointError):
    """A valid file uses something this reader does not know: a version, a dtype,
    codec or filter id, or a record kind (FORMAT.md §3.8, §4.9)."""


class BlobNotFoundError(CheckpointError, KeyError):
    """No live blob has the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return self._render()


class NotViewableError(CheckpointError):
    """A zero-copy view was asked for a blob whose payload is not its raw bytes (compressed)."""


class WriterLockedError(CheckpointError):
    """Another writer holds the file's ``PATH.lock`` (FORMAT.md §6.3)."""
