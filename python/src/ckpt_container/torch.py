"""PyTorch front end, like ``safetensors.torch``: ``load_file``, ``save_file``, ``load``, ``save``.

Tensors cross to numpy without a copy (bf16 and fp8 through a same-width
integer view, since numpy has no such types of its own). F6/F4, STRING and
C128-less builds have no torch dtype here: reading them raises
``UnsupportedError``; use ``framework="np"``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import numpy as np

from ._reader import ContainerFile
from ._writer import EncodeOptions, write_file
from .errors import CheckpointError, UnsupportedError


def _torch_dtypes() -> Dict[str, Any]:
    import torch
    table = {
        "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "F16": torch.float16,
        "BF16": torch.bfloat16, "I32": torch.int32, "F32": torch.float32, "I64": torch.int64,
        "F64": torch.float64, "C64": torch.complex64, "C128": torch.complex128, "RAW": torch.uint8,
    }
    optional = {"U16": "uint16", "U32": "uint32", "U64": "uint64", "F8_E4M3": "float8_e4m3fn",
                "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz",
                "F8_E5M2FNUZ": "float8_e5m2fnuz"}
    for name, attribute in optional.items():
        if hasattr(torch, attribute):
            table[name] = getattr(torch, attribute)
    return table


_INT_OF_SIZE = {1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}


def _numpy_to_torch(array: np.ndarray, dtype_name: str, name: str) -> Any:
    """A tensor over ``array``'s memory (no copy) with the dtype ``dtype_name`` names."""
    import torch
    target = _torch_dtypes().get(dtype_name)
    if target is None:
        raise UnsupportedError(f"dtype {dtype_name} has no torch dtype here (read it with framework='np')", blob=name)
    if dtype_name in ("BOOL", "U8", "I8", "I16", "F16", "I32", "F32", "I64", "F64", "C64", "C128", "RAW"):
        source = array
    else:
        source = array.view(_INT_OF_SIZE[array.dtype.itemsize])
    if not source.flags.writeable:
        source = source.copy()  # torch tensors are writable; a read-only view is copied (never the case for pt)
    tensor = torch.from_numpy(source) if source.ndim else torch.from_numpy(source.reshape(1)).reshape(())
    return tensor if tensor.dtype == target else tensor.view(target)


def _torch_to_numpy(tensor: Any, name: str) -> np.ndarray:
    """The numpy array (ml_dtypes for bf16/fp8) over a CPU tensor's memory, without a copy where it is contiguous."""
    import ml_dtypes
    import torch
    reverse = {v: k for k, v in _torch_dtypes().items() if k != "RAW"}
    dtype_name = reverse.get(tensor.dtype)
    if dtype_name is None:
        raise CheckpointError(f"torch dtype {tensor.dtype} has no container dtype", blob=name)
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    numpy_types = {"BF16": ml_dtypes.bfloat16, "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
                   "F8_E8M0": ml_dtypes.float8_e8m0fnu, "F8_E4M3FNUZ": ml_dtypes.float8_e4m3fnuz,
                   "F8_E5M2FNUZ": ml_dtypes.float8_e5m2fnuz, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64}
    if dtype_name in numpy_types:
        size = t.element_size()
        as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[size]
        return t.view(as_int).numpy().view(numpy_types[dtype_name])
    return t.numpy()


def save_file(tensors: Dict[str, Any], filename: "str | os.PathLike[str]", metadata: Optional[Dict[str, str]] = None,
              *, codec: str = "none", level: Optional[int] = None, shuffle: str = "auto",
              chunk_size: Optional[int] = None, alignment: int = 64, durability: str = "full") -> None:
    """Writes torch tensors to ``filename`` atomically; options as ``ckpt_container.numpy.save_file``."""
    options = EncodeOptions(codec=codec, level=level, shuffle=shuffle, chunk_size=chunk_size)
    write_file(tensors, filename, metadata=metadata, options=options, alignment=alignment, durability=durability)


def load_file(filename: "str | os.PathLike[str]", device: Any = "cpu", *, verify: bool = True) -> Dict[str, Any]:
    """Every tensor of ``filename`` as an owned torch tensor on ``device`` (CRC32C-checked unless ``verify=False``)."""
    result: Dict[str, Any] = {}
    with ContainerFile(filename) as f:
        for name in f.names():
            array = f.array(name, verify=verify, copy=True)
            tensor = _numpy_to_torch(array, f.dtype_name(name), name)
            result[name] = tensor if str(device) == "cpu" else tensor.to(device)
    return result


def save(tensors: Dict[str, Any], metadata: Optional[Dict[str, str]] = None, **options: Any) -> bytes:
    """The bytes of a container file holding ``tensors``."""
    from .numpy import save as _save
    return _save(tensors, metadata, **options)


def load(data: bytes, device: Any = "cpu", *, verify: bool = True) -> Dict[str, Any]:
    """The tensors of a container file given as bytes."""
    import tempfile
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "blob.ckpt")
        with open(path, "wb") as f:
            f.write(data)
        return load_file(path, device, verify=verify)
