"""Helpers shared by the tests: the Swift binaries (CKPT_BIN, else ../.build/debug/ckpt), data generators."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import ml_dtypes
import numpy as np
import pytest

import ckpt_container as cc

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "Tests" / "CheckpointIOTests" / "Fixtures"


def _binary(variable: str, name: str) -> Optional[str]:
    configured = os.environ.get(variable)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for build in ("debug", "release"):
        candidate = REPO / ".build" / build / name
        if candidate.exists() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


CKPT_BIN = _binary("CKPT_BIN", "ckpt")
STRESS_BIN = _binary("CKPT_STRESS_BIN", "checkpoint-stress")

needs_ckpt = pytest.mark.skipif(CKPT_BIN is None, reason="the Swift ckpt binary is not built: run `swift build` "
                                "at the repository root or set CKPT_BIN")


def run_ckpt(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs the real Swift `ckpt` and returns the completed process."""
    assert CKPT_BIN is not None
    result = subprocess.run([CKPT_BIN, *args, "--quiet"] if args[0] in ("convert", "extract") else [CKPT_BIN, *args],
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"ckpt {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def all_dtype_arrays(rng: np.random.Generator, n: int = 96) -> Dict[str, np.ndarray]:
    """One array per numpy-representable dtype of FORMAT.md §3.6 (sub-byte ones with n % 4 == 0 elements)."""
    f = rng.standard_normal(n).astype(np.float32)
    return {
        "bool": rng.integers(0, 2, n).astype(bool),
        "u8": rng.integers(0, 256, n, dtype=np.uint8),
        "i8": rng.integers(-128, 128, n, dtype=np.int8),
        "u16": rng.integers(0, 1 << 16, n, dtype=np.uint16),
        "i16": rng.integers(-(1 << 15), 1 << 15, n, dtype=np.int16),
        "f16": f.astype(np.float16),
        "bf16": f.astype(ml_dtypes.bfloat16),
        "u32": rng.integers(0, 1 << 32, n, dtype=np.uint32),
        "i32": rng.integers(-(1 << 31), 1 << 31, n, dtype=np.int32),
        "f32": f.reshape(4, -1),
        "u64": rng.integers(0, 1 << 63, n, dtype=np.uint64),
        "i64": rng.integers(-(1 << 62), 1 << 62, n, dtype=np.int64),
        "f64": f.astype(np.float64),
        "c64": (f + 1j * f[::-1]).astype(np.complex64),
        "c128": (f + 1j * f[::-1]).astype(np.complex128),
        "f8_e4m3": f.astype(ml_dtypes.float8_e4m3fn),
        "f8_e5m2": f.astype(ml_dtypes.float8_e5m2),
        "f8_e8m0": np.abs(f).astype(ml_dtypes.float8_e8m0fnu),
        "f8_e4m3fnuz": f.astype(ml_dtypes.float8_e4m3fnuz),
        "f8_e5m2fnuz": f.astype(ml_dtypes.float8_e5m2fnuz),
        "f6_e2m3": f.astype(ml_dtypes.float6_e2m3fn),
        "f6_e3m2": f.astype(ml_dtypes.float6_e3m2fn),
        "f4": f.astype(ml_dtypes.float4_e2m1fn).reshape(2, -1),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 5), dtype=np.float32),
    }


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact equality (NaNs included) with the same dtype and shape."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return a.tolist() == b.tolist()
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def transformer_like(rng: np.random.Generator, hidden: int = 64, layers: int = 2) -> Dict[str, np.ndarray]:
    """A small transformer-shaped state dict (fp32 weights with trained-like spread)."""
    tensors: Dict[str, np.ndarray] = {"embeddings.word_embeddings.weight":
                                      (rng.standard_normal((512, hidden)) * 0.02).astype(np.float32)}
    for layer in range(layers):
        p = f"encoder.layer.{layer}."
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            tensors[p + part + ".weight"] = (rng.standard_normal((hidden, hidden)) * 0.02).astype(np.float32)
            tensors[p + part + ".bias"] = np.zeros(hidden, dtype=np.float32)
        tensors[p + "intermediate.dense.weight"] = (rng.standard_normal((4 * hidden, hidden)) * 0.02).astype(np.float32)
        tensors[p + "output.dense.weight"] = (rng.standard_normal((hidden, 4 * hidden)) * 0.02).astype(np.float32)
        tensors[p + "output.LayerNorm.weight"] = np.ones(hidden, dtype=np.float32)
    tensors["position_ids"] = np.arange(512, dtype=np.int64)[None, :]
    return tensors


def names_sorted(d: Dict[str, object]) -> List[str]:
    return sorted(d, key=lambda n: n.encode("utf-8"))


SAFETENSORS_NAMES = {"BOOL": "BOOL", "U8": "U8", "I8": "I8", "U16": "U16", "I16": "I16", "F16": "F16", "BF16": "BF16",
                     "U32": "U32", "I32": "I32", "F32": "F32", "U64": "U64", "I64": "I64", "F64": "F64",
                     "C64": "C64", "F8_E4M3": "F8_E4M3", "F8_E5M2": "F8_E5M2", "F8_E8M0": "F8_E8M0",
                     "F8_E4M3FNUZ": "F8_E4M3FNUZ", "F8_E5M2FNUZ": "F8_E5M2FNUZ", "F6_E2M3": "F6_E2M3",
                     "F6_E3M2": "F6_E3M2", "F4": "F4"}


def write_safetensors_by_hand(tensors: Dict[str, np.ndarray], path: Path) -> None:
    """A safetensors file for dtypes the `safetensors` numpy API lacks (bf16, fp8, fp6, fp4),
    laid out as its spec says: u64 header length, JSON header, data in header order."""
    header: Dict[str, object] = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        array = tensors[name]
        dtype = cc.DTYPES[{d.numpy: d.id for d in cc.DTYPES.values() if d.id not in (32, 33)}[array.dtype]]
        if dtype.packed:
            from ckpt_container._dtypes import pack_subbyte
            data = pack_subbyte(array, dtype).tobytes()
        else:
            data = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": SAFETENSORS_NAMES[dtype.name], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
