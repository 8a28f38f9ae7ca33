#!/usr/bin/env python3
"""Checkpoint save/load on S3: this engine against boto3, same server, same bytes, one run.

Starts moto's S3 server on a free loopback port, writes SIZE random bytes to a
local file, saves once with each client (warm-up, not counted), then runs REPEAT
rounds, each side first in every other round (use an even REPEAT):

- save: ``ckpt s3-bench save FILE s3://bench/ours.ckpt`` (the file's bytes,
  mapped from the page cache before the timer, as one blob streamed into a
  multipart upload) vs boto3's ``upload_file`` (s3transfer's default
  configuration, which read()s the same page-cache file inside its timer);
- load: ``ckpt s3-bench load s3://bench/ours.ckpt`` (open + read + CRC32C
  verify into memory) vs boto3's ``download_fileobj`` into memory: fresh memory
  (a ``BytesIO`` for boto3), whose first touch both sides pay, or with
  ``--resident`` memory touched before the timer on both sides (a resumed job
  restoring into its model's parameters; boto3 writes through a file object
  over a touched ``bytearray``).

Reports the medians of wall time and CPU time (user + sys of the client only;
moto runs in its own process) and their ratios, and the peak extra memory of
our save. Usage:

    swift build -c release --product ckpt
    python3 scripts/bench-s3.py [--size 1G] [--repeat 4] [--ckpt .build/release/ckpt] [--only save|load]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import boto3


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("moto did not start")


def ours(ckpt: str, env: dict, *args: str) -> dict:
    result = subprocess.run([ckpt, "s3-bench", *args], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


class ResidentWriter(io.RawIOBase):
    """A seekable file object writing into a bytearray whose pages are touched up front."""

    def __init__(self, size: int) -> None:
        self.memory = bytearray(size)  # zero-filled: every page touched
        self.view = memoryview(self.memory)
        self.position = 0
        self.end = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.end}[whence] + offset
        return self.position

    def write(self, data) -> int:
        count = len(data)
        if self.position + count > len(self.memory):
            raise ValueError("write past the end of the resident buffer")
        self.view[self.position:self.position + count] = data
        self.position += count
        self.end = max(self.end, self.position)
        return count


def timed(body) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    body()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1G")
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--ckpt", default=".build/release/ckpt")
    parser.add_argument("--resident", action="store_true", help="load into memory touched before the timer (both sides)")
    parser.add_argument("--only", choices=["save", "load"], help="measure only saves or only loads (a 1 GiB load round takes ~2 min on moto)")
    args = parser.parse_args()
    if args.repeat < 2 or args.repeat % 2:
        parser.error("--repeat must be even (each client goes first in half of the rounds)")
    size = parse_size(args.size)
    port = free_port()
    moto = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench")
    try:
        s3.create_bucket(Bucket="bench")
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "data.bin")
            with open(path, "wb") as f:
                remaining = size
                while remaining:
                    n = min(remaining, 64 << 20)
                    f.write(os.urandom(n))
                    remaining -= n
                # On disk before the first round: its write-back would otherwise run during the
                # first rounds (the kernel starts it ~30 s after the write) and slow whoever runs then.
                f.flush()
                os.fsync(f.fileno())
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").digest()
            rows = {"save": {"ours": [], "boto3": []}, "load": {"ours": [], "boto3": []}}
            peak = []

            def save_ours() -> None:
                result = ours(args.ckpt, env, "save", path, "s3://bench/ours.ckpt")
                rows["save"]["ours"].append(result)
                peak.append(result["peakExtraBytes"])

            def save_boto3() -> None:
                rows["save"]["boto3"].append(timed(lambda: s3.upload_file(path, "bench", "boto3.bin")))

            def load_ours() -> None:
                rows["load"]["ours"].append(ours(args.ckpt, env, "load", *(["--resident"] if args.resident else []), "s3://bench/ours.ckpt"))

            def load_boto3() -> None:
                if args.resident:
                    buffer = ResidentWriter(size)
                    rows["load"]["boto3"].append(timed(lambda: s3.download_fileobj("bench", "boto3.bin", buffer)))
                    loaded = buffer.view[:buffer.end]
                else:
                    buffer = io.BytesIO()
                    rows["load"]["boto3"].append(timed(lambda: s3.download_fileobj("bench", "boto3.bin", buffer)))
                    loaded = buffer.getbuffer()
                # Outside the timer: boto3's load is the source, byte for byte (ours checks every CRC32C itself).
                if loaded.nbytes != size or hashlib.sha256(loaded).digest() != digest:
                    raise SystemExit(f"boto3's load differs from the source ({loaded.nbytes} of {size} bytes)")
                loaded.release()

            # Warm-up (not counted): one save of each, so that neither side's first
            # measured run meets a fresh server. Then each round alternates who goes
            # first: the run right after a large transfer is often slower (moto frees
            # the replaced object and its buffers meanwhile), whoever runs it.
            save_ours()
            save_boto3()
            rows["save"] = {"ours": [], "boto3": []}
            peak.clear()
            for index in range(args.repeat):
                pairs = [pair for action, pair in (("save", (save_ours, save_boto3)), ("load", (load_ours, load_boto3)))
                         if args.only in (None, action)]
                for first, second in pairs:
                    if index % 2:
                        first, second = second, first
                    first()
                    second()
    finally:
        moto.kill()
        moto.wait()
    destination = "memory touched before the timer" if args.resident else "fresh memory"
    print(f"S3 on moto (loopback), {size / (1 << 30):.2f} GiB, median of {args.repeat} runs, loads into {destination}")
    print(f"{'':6} {'ours wall':>10} {'boto3 wall':>11} {'speed ×':>8} {'ours cpu':>9} {'boto3 cpu':>10} {'cpu ratio':>9}")
    actions = [args.only] if args.only else ["save", "load"]
    for action in actions:
        ow = statistics.median(r["wall"] for r in rows[action]["ours"])
        bw = statistics.median(r["wall"] for r in rows[action]["boto3"])
        oc = statistics.median(r["cpu"] for r in rows[action]["ours"])
        bc = statistics.median(r["cpu"] for r in rows[action]["boto3"])
        print(f"{action:6} {ow:9.2f}s {bw:10.2f}s {bw / ow:7.2f}× {oc:8.2f}s {bc:9.2f}s {oc / bc:8.2f}×")
    for action in actions:
        for side in ("ours", "boto3"):
            runs = ", ".join(f"{r['wall']:.2f}/{r['cpu']:.2f}" for r in rows[action][side])
            print(f"  {action} {side:5} wall/cpu s per round (ours first in rounds 1, 3, ...): {runs}")
    if peak:
        print(f"peak extra memory of our save: {max(peak) / (1 << 20):.0f} MiB (bound: 8 parts × 16 MiB + 64 MiB = 192 MiB)")


if __name__ == "__main__":
    main()
