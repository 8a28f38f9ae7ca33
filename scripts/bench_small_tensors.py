#!/usr/bin/env python3
"""Small tensors (issue 16.3): ckpt next to dd, safetensors and h5py on the same tensors, in one run.

    python3 scripts/bench_small_tensors.py [--ckpt .build/release/ckpt] [--count 20000] [--repeat 5] [--rounds 1] [--dir DIR]

Makes `--count` uint8 tensors of 256 B to 64 KiB (uniform, seeded, random bytes: ~625 MiB
for 20,000), writes them once with safetensors, and hands that file to
`ckpt bench --workload FILE`, so that ckpt saves and loads exactly these tensors; its own
floor (`write` of the same byte count in 16 MiB calls, the dd of this machine) is
measured in the same process. Then, in this process, each as the median of --repeat runs
after one warm-up run, every timed run after os.sync():

  save       safetensors.numpy.save_file; h5py, one dataset per tensor
  load       safetensors.numpy.load_file; h5py, every dataset read into a new array
             (both into owned memory, neither checks a checksum: ckpt's load checks every CRC32C)
  open+list  safe_open(...).keys(); h5py.File(...).keys()

and prints the ratios the issue asks for (ckpt save / dd, ckpt save / peers, ckpt load / h5py,
open + list latencies). Throughputs are bytes over seconds of the same byte count.
With --rounds N all of that runs N times, each round printed, then the median of every
figure over the rounds: on VMs a page-cache write is fast or, when its fresh pages fault
in the host, ~12x slower, so one round is one sample.
Needs numpy, safetensors and h5py (`pip install numpy safetensors h5py`). Not part of CI.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import tempfile
import time
from typing import Callable, Dict, List

import h5py
import numpy as np
import safetensors.numpy
from safetensors import safe_open


def make_tensors(count: int, seed: int = 20_000) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(256, 65536, size=count, endpoint=True)
    block = rng.integers(0, 256, size=16 << 20, dtype=np.uint8)
    tensors: Dict[str, np.ndarray] = {}
    offset = 0
    for index, size in enumerate(sizes):
        start = offset % (len(block) - 65536)
        tensors[f"small.{index}"] = block[start:start + size].copy()
        offset += int(size)
    return tensors


def timed(function: Callable[[], object], repeat: int, prepare: Callable[[], None] = lambda: None) -> float:
    """Median seconds of `repeat` runs after one warm-up run; os.sync() and gc before each."""
    times: List[float] = []
    for run in range(repeat + 1):
        prepare()
        gc.collect()
        os.sync()
        start = time.perf_counter()
        function()
        elapsed = time.perf_counter() - start
        if run > 0:
            times.append(elapsed)
    return statistics.median(times)


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def h5_save(tensors: Dict[str, np.ndarray], path: str) -> None:
    with h5py.File(path, "w") as file:
        for name, array in tensors.items():
            file.create_dataset(name, data=array)


def h5_load(path: str) -> Dict[str, np.ndarray]:
    with h5py.File(path, "r") as file:
        return {name: file[name][()] for name in file.keys()}


def h5_list(path: str) -> List[str]:
    with h5py.File(path, "r") as file:
        return list(file.keys())


def st_list(path: str) -> List[str]:
    with safe_open(path, framework="np") as file:
        return list(file.keys())


def measure_round(args: argparse.Namespace, tensors: Dict[str, np.ndarray], directory: str) -> Dict[str, float]:
    """One round: ckpt bench (ours and its dd floor) on the tensors, then the peers, in this order."""
    total = sum(array.nbytes for array in tensors.values())
    st_path = os.path.join(directory, "small.safetensors")
    h5_path = os.path.join(directory, "small.h5")
    safetensors.numpy.save_file(tensors, st_path)

    # ckpt on exactly these tensors, with its dd-style floor, in its own process.
    run = subprocess.run([args.ckpt, "bench", "--workload", st_path, "--dir", directory,
                          "--repetitions", str(args.repeat), "--json", "--quiet"],
                         check=True, capture_output=True, text=True)
    ckpt = {result["name"]: result for result in json.loads(run.stdout)["results"]}
    save, load, listing = ckpt["save (page cache)"], ckpt["load + verify CRC32C"], ckpt["open + list"]

    st_save = timed(lambda: safetensors.numpy.save_file(tensors, st_path), args.repeat, lambda: remove(st_path))
    h5_save_s = timed(lambda: h5_save(tensors, h5_path), args.repeat, lambda: remove(h5_path))
    st_load = timed(lambda: safetensors.numpy.load_file(st_path), args.repeat)
    h5_load_s = timed(lambda: h5_load(h5_path), args.repeat)
    st_open = timed(lambda: st_list(st_path), args.repeat)
    h5_open = timed(lambda: h5_list(h5_path), args.repeat)
    assert len(h5_list(h5_path)) == len(tensors) == len(st_list(st_path))
    remove(h5_path)

    gbps = lambda seconds: total / seconds / 1e9
    return {
        "tensors": len(tensors), "bytes": total,
        "ckpt_save_gbps": gbps(save["seconds"]), "dd_write_gbps": gbps(save["floor_seconds"]),
        "safetensors_save_gbps": gbps(st_save), "h5py_save_gbps": gbps(h5_save_s),
        "ckpt_load_gbps": gbps(load["seconds"]), "dd_read_gbps": gbps(load["floor_seconds"]),
        "safetensors_load_gbps": gbps(st_load), "h5py_load_gbps": gbps(h5_load_s),
        "ckpt_open_list_ms": listing["seconds"] * 1e3, "safetensors_open_list_ms": st_open * 1e3,
        "h5py_open_list_ms": h5_open * 1e3,
        "save_vs_dd": save["floor_seconds"] / save["seconds"],
        "save_vs_safetensors": st_save / save["seconds"], "save_vs_h5py": h5_save_s / save["seconds"],
        "load_vs_h5py": h5_load_s / load["seconds"], "load_vs_safetensors": st_load / load["seconds"],
    }


def print_round(figures: Dict[str, float], repeat: int, title: str) -> None:
    print(f"{title}: {figures['tensors']} tensors, {figures['bytes'] / (1 << 20):.0f} MiB; medians of {repeat} runs after a warm-up")
    print(f"save  ckpt {figures['ckpt_save_gbps']:.2f} GB/s | dd {figures['dd_write_gbps']:.2f} | safetensors {figures['safetensors_save_gbps']:.2f}"
          f" | h5py {figures['h5py_save_gbps']:.2f}")
    print(f"load  ckpt (CRC32C) {figures['ckpt_load_gbps']:.2f} GB/s | read {figures['dd_read_gbps']:.2f} | safetensors {figures['safetensors_load_gbps']:.2f}"
          f" | h5py {figures['h5py_load_gbps']:.2f}")
    print(f"open + list  ckpt {figures['ckpt_open_list_ms']:.3f} ms | safetensors {figures['safetensors_open_list_ms']:.3f} ms"
          f" | h5py {figures['h5py_open_list_ms']:.3f} ms")
    print(f"ratios: save/dd {figures['save_vs_dd']:.2f} (target >= 0.9), save/safetensors {figures['save_vs_safetensors']:.2f} (>= 1.5),"
          f" save/h5py {figures['save_vs_h5py']:.2f} (>= 1.5), load/h5py {figures['load_vs_h5py']:.2f} (>= 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=".build/release/ckpt", help="the ckpt binary (release build)")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1,
                        help="whole rounds (ckpt, then the peers), each printed; with more than one, also the median "
                             "of every figure over the rounds (page-cache writes on VMs are bimodal: one round is one sample)")
    parser.add_argument("--dir", default=None, help="directory for the files (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (the medians over the rounds)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-small-") as directory:
        tensors = make_tensors(args.count)
        rounds = []
        for index in range(max(1, args.rounds)):
            rounds.append(measure_round(args, tensors, directory))
            if not args.json:
                print_round(rounds[-1], args.repeat, f"round {index + 1} of {max(1, args.rounds)}")

    figures = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    if args.json:
        print(json.dumps(figures, indent=2))
    elif len(rounds) > 1:
        print_round(figures, args.repeat, f"median of {len(rounds)} rounds (each figure on its own)")


if __name__ == "__main__":
    main()
