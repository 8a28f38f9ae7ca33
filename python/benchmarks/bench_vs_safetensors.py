#!/usr/bin/env python3
"""ckpt_container against safetensors, same run, same data (fp32 weights), warm page cache.

    python3 python/benchmarks/bench_vs_safetensors.py --size 2G --repeat 3 [--dir /tmp] [--json]

Measures, each as the median of --repeat runs (the first run is reported apart):
  save        safetensors.numpy.save_file   vs  ckpt_container.numpy.save_file (durability none, and full = fsync)
  load_file   safetensors.numpy.load_file   vs  ckpt_container.numpy.load_file (owned arrays, CRC32C verified)
  get_tensor  safetensors.safe_open(np)     vs  ckpt_container.safe_open(np) (zero-copy views, CRC32C verified;
              and with verify=False)
plus the floors of the machine in the same run: memcpy of the working set and a CRC32C pass.
Every timed run starts after os.sync(), so that write-back of earlier saves does not land in
later measurements. Not part of CI.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, List

import numpy as np
import safetensors.numpy
from safetensors import safe_open as st_safe_open

import ckpt_container
from ckpt_container._crc import crc32c
from ckpt_container.numpy import load_file, save_file


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def make_weights(total: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Transformer-shaped fp32 tensors (64 MiB matrices plus small vectors) adding up to about ``total`` bytes."""
    rng = np.random.default_rng(seed)
    tensors: Dict[str, np.ndarray] = {}
    layer = 0
    size = 0
    while size < total:
        n = min(4096 * 4096, max(1024, (total - size) // 4))
        rows = max(1, n // 4096)
        tensors[f"layers.{layer}.weight"] = (rng.standard_normal((rows, n // rows), dtype=np.float32) * 0.02)
        tensors[f"layers.{layer}.bias"] = np.zeros(4096, dtype=np.float32)
        size += tensors[f"layers.{layer}.weight"].nbytes + 4096 * 4
        layer += 1
    return tensors


def timed(function: Callable[[], object], repeat: int) -> List[float]:
    times = []
    for _ in range(repeat + 1):
        gc.collect()
        os.sync()  # earlier saves' write-back must not slow whatever is measured next
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
        del result
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="2G", help="bytes of fp32 weights, e.g. 512M, 2G")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="directory for the files (default: a temporary one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    total = parse_size(args.size)
    tensors = make_weights(total)
    nbytes = sum(t.nbytes for t in tensors.values())
    directory = tempfile.mkdtemp(dir=args.dir)
    st_path = os.path.join(directory, "w.safetensors")
    ck_path = os.path.join(directory, "w.ckpt")

    # Warm-up: touch and free a buffer of the working size (fresh pages are slow on this VM).
    warm = np.ones(nbytes // 8, dtype=np.float64)
    del warm

    results: Dict[str, List[float]] = {}

    def record(name: str, function: Callable[[], object]) -> None:
        results[name] = timed(function, args.repeat)

    flat = [t.reshape(-1).view(np.uint8) for t in tensors.values()]
    record("floor: memcpy", lambda: [np.copy(t) for t in flat])
    record("floor: crc32c", lambda: [crc32c(t) for t in flat])

    record("save safetensors", lambda: safetensors.numpy.save_file(tensors, st_path))
    record("save ckpt (durability none)", lambda: save_file(tensors, ck_path, durability="none"))
    record("save ckpt (durability full, fsync)", lambda: save_file(tensors, ck_path, durability="full"))

    record("load_file safetensors", lambda: safetensors.numpy.load_file(st_path))
    record("load_file ckpt (verified)", lambda: load_file(ck_path))
    record("load_file ckpt (verify=False)", lambda: load_file(ck_path, verify=False))

    def st_views() -> int:
        with st_safe_open(st_path, framework="np") as f:
            return sum(f.get_tensor(k).nbytes for k in f.keys())

    def ck_views(verify: bool) -> int:
        with ckpt_container.safe_open(ck_path, framework="np", verify=verify) as f:
            return sum(f.get_tensor(k).nbytes for k in f.keys())

    record("get_tensor safetensors", st_views)
    record("get_tensor ckpt (zero-copy, verified)", lambda: ck_views(True))
    record("get_tensor ckpt (zero-copy, verify=False)", lambda: ck_views(False))

    summary = {name: {"first_s": times[0], "median_s": statistics.median(times[1:]),
                      "median_GBps": nbytes / statistics.median(times[1:]) / 1e9} for name, times in results.items()}

    def ratio(ours: str, theirs: str) -> float:
        return summary[ours]["median_GBps"] / summary[theirs]["median_GBps"]

    ratios = {
        "get_tensor ckpt verified / safetensors": ratio("get_tensor ckpt (zero-copy, verified)", "get_tensor safetensors"),
        "get_tensor ckpt unverified / safetensors": ratio("get_tensor ckpt (zero-copy, verify=False)",
                                                          "get_tensor safetensors"),
        "load_file ckpt verified / safetensors": ratio("load_file ckpt (verified)", "load_file safetensors"),
        "save ckpt none / safetensors": ratio("save ckpt (durability none)", "save safetensors"),
        "save ckpt full / safetensors": ratio("save ckpt (durability full, fsync)", "save safetensors"),
    }
    for path in (st_path, ck_path):
        os.remove(path)
    os.rmdir(directory)
    if args.json:
        print(json.dumps({"bytes": nbytes, "tensors": len(tensors), "results": summary, "ratios": ratios}, indent=1))
        return
    print(f"{len(tensors)} fp32 tensors, {nbytes / 2**30:.2f} GiB, median of {args.repeat} (first run apart)")
    for name, row in summary.items():
        print(f"  {name:45s} {row['median_GBps']:7.2f} GB/s   (first run {nbytes / row['first_s'] / 1e9:6.2f} GB/s)")
    for name, value in ratios.items():
        print(f"  ratio {name:40s} {value:5.2f}")


if __name__ == "__main__":
    main()
