"""Benchmark: load a batch of 8 random windows of 2^20 bases from a memory-mapped token store.

    python bench/bench_windows.py [--store DIR] [--batch 8] [--length 1048576] [--repeats 20]

Without --store it builds a 64 Mb random store in a temp dir. Prints and writes
bench/results/windows.json (median / p90 ms per batch, GB/s of int64 output).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mambaseq.data import Interval, RandomWindows, StoreWriter, TokenStore
from mambaseq.fileio import write_json


def build_store(path: Path, n_seq: int = 4, length: int = 16 << 20) -> TokenStore:
    rng = np.random.default_rng(0)
    with StoreWriter(path, "bench", source={"kind": "bench", "synthetic": True}, synthetic=True) as w:
        for i in range(n_seq):
            w.add(f"chr{i}", rng.integers(0, 5, length, dtype=np.uint8))
    return TokenStore(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=1 << 20)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "windows.json"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        store = TokenStore(args.store) if args.store else build_store(Path(tmp) / "store")
        ivs = [Interval(n, 0, int(L)) for n, L in zip(store.names, store.lengths)]
        ds = RandomWindows(store, ivs, args.length, seed=0)
        first_t = time.perf_counter()
        x, _ = ds.batch(0, args.batch)
        first = time.perf_counter() - first_t
        times = []
        for step in range(1, args.repeats + 1):
            t = time.perf_counter()
            x, _ = ds.batch(step, args.batch)
            times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    res = {"batch": args.batch, "length": args.length, "dtype": str(x.dtype), "shape": list(x.shape),
           "first_batch_ms": first * 1e3, "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
           "output_GB_per_s": x.numel() * x.element_size() / (np.median(ms) / 1e3) / 1e9,
           "store": args.store or "random 4 x 16 Mb temp store", "torch_threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine(), "target_ms": 100}
    print(f"batch of {args.batch} x {args.length:,} bases -> {tuple(x.shape)} {x.dtype}: median {res['median_ms']:.1f} ms, "
          f"p90 {res['p90_ms']:.1f} ms, first {res['first_batch_ms']:.1f} ms (target < 100 ms)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(res, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
