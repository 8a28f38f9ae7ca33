"""The safetensors-shaped API: ``safe_open`` with ``keys``, ``metadata``, ``get_tensor`` and ``get_slice``."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

import numpy as np

from . import _dtypes
from ._codecs import PLANES_ID
from ._reader import ContainerFile, plane_batches
from .errors import CheckpointError, ChecksumError

_FRAMEWORKS = {"np": "np", "numpy": "np", "pt": "pt", "torch": "pt", "pytorch": "pt"}


class safe_open:  # noqa: N801 - the name safetensors users know
    """Opens a container file the way ``safetensors.safe_open`` opens a safetensors file.

    ::

        with safe_open("model.ckpt", framework="pt") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)

    Uncompressed blobs come back as zero-copy views of a mapping of the file:
    read-only numpy arrays (``framework="np"``, as safetensors), or tensors
    over a private copy-on-write mapping of their own (``framework="pt"``:
    writable; neither the file nor other tensors see the writes). Compressed blobs decode into fresh arrays. Every chunk's CRC32C
    and the raw CRC32C are checked before a tensor is returned, unless
    ``verify=False``.

    Args:
        path: the container file.
        framework: ``"np"``/``"numpy"`` or ``"pt"``/``"torch"``.
        device: torch device for ``framework="pt"`` (``"cpu"``, ``"cuda:0"``…).
        verify: check CRC32Cs on every read (default True).
    """

    def __init__(self, path: "str | os.PathLike[str]", framework: str = "np", device: Any = "cpu",
                 verify: bool = True) -> None:
        if framework not in _FRAMEWORKS:
            raise ValueError(f"framework must be one of {sorted(_FRAMEWORKS)}, not {framework!r}")
        self.framework = _FRAMEWORKS[framework]
        self.device = device
        self.verify = verify
        if self.framework == "pt":
            import torch  # noqa: F401  - fail early with torch's ImportError
        self._file = ContainerFile(path)

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    @property
    def file(self) -> ContainerFile:
        """The underlying ``ContainerFile`` (headers, raw views, verification)."""
        return self._file

    def keys(self) -> List[str]:
        """Blob names, sorted (by UTF-8 bytes)."""
        return self._file.names()

    def offset_keys(self) -> List[str]:
        """Blob names in file order."""
        entries = sorted(self._file._index.by_name.values(), key=lambda e: e.record_offset)
        return [e.name for e in entries]

    def metadata(self) -> Dict[str, str]:
        """The file-level metadata."""
        return self._file.metadata

    def get_tensor(self, name: str) -> Any:
        """Blob ``name`` as a numpy array or torch tensor (zero-copy when uncompressed)."""
        array = self._file.array(name, verify=self.verify, private=self.framework == "pt")
        return self._convert(array, name)

    def get_slice(self, name: str) -> "TensorSlice":
        """A lazy slice of blob ``name``: ``f.get_slice("w")[0:2, :]`` reads (and checks) only the
        chunks the slice touches when the blob is uncompressed."""
        return TensorSlice(self, name)

    def _convert(self, array: np.ndarray, name: str) -> Any:
        if self.framework == "np":
            return array
        from .torch import _numpy_to_torch
        tensor = _numpy_to_torch(array, self._file.dtype_name(name), name)
        if str(self.device) != "cpu":
            tensor = tensor.to(self.device)
        return tensor


class TensorSlice:
    """What ``safe_open.get_slice`` returns: shape and dtype without reading, data on indexing."""

    def __init__(self, owner: safe_open, name: str) -> None:
        self._owner = owner
        self._name = name
        self._entry = owner._file.entry(name)

    def get_shape(self) -> List[int]:
        return list(self._entry.shape)

    def get_dtype(self) -> str:
        return self._owner._file.dtype_name(self._name)

    def __getitem__(self, index: Any) -> Any:
        f = self._owner._file
        header = f.header(self._name)
        dtype = _dtypes.DTYPES[header.dtype]
        if not header.stored_raw or dtype.bits < 8 or dtype.id == _dtypes.STRING.id:
            # Compressed (or packed/string): the whole blob decodes, then the slice is taken.
            return self._owner._convert(np.ascontiguousarray(f.array(self._name, verify=self._owner.verify)[index]),
                                        self._name)
        full = f.array(self._name, verify=False, private=self._owner.framework == "pt")
        part = full[index]
        if self._owner.verify and part.size:
            self._verify_touched(f, header, full, part)
        return self._owner._convert(np.ascontiguousarray(part) if not part.flags.c_contiguous else part, self._name)

    def _verify_touched(self, f: ContainerFile, header: Any, full: np.ndarray, part: np.ndarray) -> None:
        """Checks the CRC32C of every chunk the bytes of ``part`` lie in."""
        base = full.__array_interface__["data"][0]
        low, high = _byte_bounds(part)
        first = (low - base) // header.chunk_size
        last = (high - 1 - base) // header.chunk_size
        payload = f.payload(self._name)
        f._verify_stored(self._name, header, payload, range(first, last + 1))


def _byte_bounds(a: np.ndarray) -> Tuple[int, int]:
    try:
        from numpy.lib.array_utils import byte_bounds  # numpy >= 2
    except ImportError:  # pragma: no cover
        from numpy import byte_bounds  # type: ignore[attr-defined,no-redef]
    return byte_bounds(a)


def load_arrays(path: "str | os.PathLike[str]", verify: bool = True) -> Dict[str, np.ndarray]:
    """Every blob of ``path`` as an owned (writable) numpy array, CRC-checked unless ``verify=False``."""
    with ContainerFile(path) as f:
        result: Dict[str, np.ndarray] = {}
        names = f.names()
        # Plane-codec blobs are decoded together, in groups of plane_batches' size (in name
        # order), each group when its first blob is reached.
        planes = plane_batches((name, f.entry(name).raw_size) for name in names if f.entry(name).codec == PLANES_ID)
        groups = {group[0]: group for group in planes}
        for name in names:
            if name in groups:
                f.decode_planes(groups[name], verify=verify)
            result[name] = f.array(name, verify=verify, copy=True)
        return result


__all__ = ["safe_open", "TensorSlice", "load_arrays", "CheckpointError", "ChecksumError"]
