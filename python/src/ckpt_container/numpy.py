"""numpy front end, like ``safetensors.numpy``: ``load_file``, ``save_file``, ``load``, ``save``.

Arrays of every dtype in FORMAT.md §3.6: numpy's own, ``ml_dtypes``' bfloat16
and fp8/fp6/fp4 types, ``str`` arrays (STRING) and ``bytes`` (RAW).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, Optional

import numpy as np

from ._api import load_arrays
from ._writer import EncodeOptions, write_file


def save_file(tensors: Dict[str, Any], filename: "str | os.PathLike[str]", metadata: Optional[Dict[str, str]] = None,
              *, codec: str = "none", level: Optional[int] = None, shuffle: str = "auto",
              chunk_size: Optional[int] = None, alignment: int = 64, durability: str = "full") -> None:
    """Writes ``tensors`` to ``filename`` as a container file, atomically.

    The file appears under its name complete or not at all: it is written as
    a temporary in the same directory, synced (``durability="full"``: fsync of
    the file and the directory; ``"data"``: fdatasync; ``"none"``: no sync)
    and renamed. Blobs are written in name order (UTF-8 bytes), uncompressed
    by default so that readers can view them in place; ``codec`` (``lz4``,
    ``lz4hc``, ``zlib``, ``zstd``, optionally ``"zstd-3"``, ``planes``, or
    ``auto``: planes for floats, the rest uncompressed), ``level``,
    ``shuffle`` (``auto``/``on``/``off``) and ``chunk_size`` are the options
    of ``ckpt convert`` and give the same bytes.

    Raises ``CheckpointError`` (naming the blob) for an unsupported dtype or
    bad option, ``WriterLockedError`` when another writer holds ``filename.lock``.
    """
    options = EncodeOptions(codec=codec, level=level, shuffle=shuffle, chunk_size=chunk_size)
    write_file(tensors, filename, metadata=metadata, options=options, alignment=alignment, durability=durability)


def load_file(filename: "str | os.PathLike[str]", *, verify: bool = True) -> Dict[str, np.ndarray]:
    """Every tensor of ``filename`` as an owned, writable numpy array (CRC32C-checked unless ``verify=False``)."""
    return load_arrays(filename, verify=verify)


def save(tensors: Dict[str, Any], metadata: Optional[Dict[str, str]] = None, **options: Any) -> bytes:
    """The bytes of a container file holding ``tensors`` (as ``save_file`` would write them)."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "blob.ckpt")
        save_file(tensors, path, metadata, durability="none", **options)
        with open(path, "rb") as f:
            return f.read()


def load(data: bytes, *, verify: bool = True) -> Dict[str, np.ndarray]:
    """The tensors of a container file given as bytes."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "blob.ckpt")
        with open(path, "wb") as f:
            f.write(data)
        return load_file(path, verify=verify)
