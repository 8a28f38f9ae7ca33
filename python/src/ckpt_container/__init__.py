"""Read and write the checkpoint engine's container files (FORMAT.md) from numpy and PyTorch.

The API is safetensors'::

    from ckpt_container import safe_open
    from ckpt_container.numpy import load_file, save_file   # or ckpt_container.torch

    save_file({"w": weights}, "model.ckpt", metadata={"epoch": "3"}, codec="zstd")
    with safe_open("model.ckpt", framework="np") as f:
        w = f.get_tensor("w")

Lower level: ``ContainerFile`` (open, list, view, decode, verify),
``ContainerWriter`` (create, append, delete, commit), ``scan`` and ``repair``
(recovery of torn or damaged files, FORMAT.md §4.8). Every error is a
``CheckpointError`` naming the file, the blob and the offset.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from ._api import TensorSlice, safe_open
from ._codecs import CODECS, Codec
from ._dtypes import DTYPES, DType
from ._reader import ContainerFile
from ._recovery import RecoveryReport, repair, scan
from ._writer import ContainerWriter, EncodeOptions
from .errors import (BlobNotFoundError, CheckpointError, ChecksumError, CorruptFileError, NotViewableError,
                     TornFileError, UnsupportedError, WriterLockedError)

__version__ = "0.1.0"


def load_file(filename: "str | os.PathLike[str]", device: Optional[Any] = None, *, framework: str = "np",
              verify: bool = True) -> Dict[str, Any]:
    """Every tensor of ``filename``: owned numpy arrays, or torch tensors on ``device`` when a device
    is given or ``framework="pt"``. CRC32C-checked unless ``verify=False``."""
    if device is not None or framework in ("pt", "torch"):
        from .torch import load_file as load_torch
        return load_torch(filename, device if device is not None else "cpu", verify=verify)
    from .numpy import load_file as load_numpy
    return load_numpy(filename, verify=verify)


def save_file(tensors: Dict[str, Any], filename: "str | os.PathLike[str]", metadata: Optional[Dict[str, str]] = None,
              **options: Any) -> None:
    """Writes numpy arrays and/or torch tensors to ``filename`` atomically (see ``ckpt_container.numpy.save_file``)."""
    from .numpy import save_file as save_numpy
    save_numpy(tensors, filename, metadata, **options)


__all__ = [
    "safe_open", "TensorSlice", "load_file", "save_file", "ContainerFile", "ContainerWriter", "EncodeOptions",
    "scan", "repair", "RecoveryReport", "CODECS", "Codec", "DTYPES", "DType",
    "CheckpointError", "CorruptFileError", "ChecksumError", "TornFileError", "UnsupportedError", "BlobNotFoundError",
    "NotViewableError", "WriterLockedError",
]
