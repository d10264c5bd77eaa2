"""GPU benchmarks for long-context pretraining (issue 6). Prints a table and writes bench/results/*.json.

    python bench/bench_pretrain_gpu.py memory                   # H100: 6 x 128 model at L = 2^16, 2^18, 2^20
    python bench/bench_pretrain_gpu.py scaling --nproc 2        # 2 x H200: DDP throughput + loss-curve match

memory: one training step = bf16 forward + backward + AdamW on batch 1 x L random bases (throughput does not
depend on the data), with and without per-block activation checkpointing; reports tokens/s (median of the
timed steps, after warm-up) and peak allocated memory. An out-of-memory configuration is reported as such.

scaling: runs the real pipeline (``python -m mambaseq.pipelines.pretrain train``) under ``torchrun`` with 1
and with N processes at the same global batch, on the SYNTHETIC genome (the GPU machine has no network and
no vt-examples), then compares steady-state tokens/s (global) and the per-step training losses.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def bench_memory(lengths: list[int], steps: int, n_layer: int, d_model: int) -> list[dict]:
    from mambaseq import MambaConfig, MambaLMHeadModel
    from mambaseq.training import autocast_context, build_optimizer, lm_loss

    if not torch.cuda.is_available():
        raise SystemExit("memory benchmark needs a CUDA GPU")
    dev = torch.device("cuda")
    rows = []
    for L in lengths:
        for ckpt in (False, True):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
            row = {"seq_len": L, "checkpoint_activations": ckpt, "n_layer": n_layer, "d_model": d_model,
                   "device": torch.cuda.get_device_name(dev)}
            try:
                torch.manual_seed(0)
                cfg = MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=10, checkpoint_activations=ckpt)
                model = MambaLMHeadModel(cfg).to(dev).train()
                opt = build_optimizer(model, 1e-3, 0.1, (0.9, 0.95))
                x = torch.randint(0, 4, (1, L + 1), device=dev)
                times = []
                for i in range(steps + 2):  # 2 warm-up steps (Triton compilation, allocator)
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    with autocast_context(dev, "bf16"):
                        loss, _ = lm_loss(model, x)
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    torch.cuda.synchronize()
                    if i >= 2:
                        times.append(time.perf_counter() - t0)
                row.update(tokens_per_s=L / statistics.median(times), step_ms=1e3 * statistics.median(times),
                           peak_memory_gib=torch.cuda.max_memory_allocated(dev) / 2**30, loss=float(loss))
            except torch.OutOfMemoryError:
                row.update(tokens_per_s=None, peak_memory_gib=None, error="out of memory")
            finally:
                model = opt = x = None
            rows.append(row)
            tps = f"{row['tokens_per_s']:>12,.0f}" if row.get("tokens_per_s") else f"{'OOM':>12}"
            mem = f"{row['peak_memory_gib']:>8.2f}" if row.get("peak_memory_gib") else f"{'-':>8}"
            print(f"L={L:>9,}  ckpt={str(ckpt):>5}  tokens/s {tps}  peak GiB {mem}", flush=True)
    return rows


def _pipeline_run(nproc: int, out: Path, overrides: list[str]) -> dict:
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "mambaseq.pipelines.pretrain", "train",
           *overrides, f"out_dir={out}"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    from mambaseq.training import read_metrics

    run = next(p for p in out.iterdir() if p.is_dir())
    m = read_metrics(run)
    tps = [v for _, v in m["train/tokens_per_s"]][1:]  # drop the first window (compilation, warm-up)
    return {"nproc": nproc, "tokens_per_s": statistics.median(tps), "loss": [v for _, v in m["train/loss"]],
            "summary": json.loads((run / "train_summary.json").read_text())}


def bench_scaling(nproc: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        base = ["data.source=simulated", f"data.out_root={tmp}/data", "data.region_size=1048576",
                "train.progress=false"] + overrides
        one = _pipeline_run(1, Path(tmp) / "p1", base)
        many = _pipeline_run(nproc, Path(tmp) / f"p{nproc}", base)
    diffs = [abs(a - b) / abs(a) for a, b in zip(one["loss"], many["loss"])]
    res = {"nproc": nproc, "tokens_per_s_1": one["tokens_per_s"], f"tokens_per_s_{nproc}": many["tokens_per_s"],
           "speedup": many["tokens_per_s"] / one["tokens_per_s"], "max_rel_loss_diff": max(diffs),
           "loss_1": one["loss"], f"loss_{nproc}": many["loss"], "overrides": base,
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    print(f"{nproc} processes: {res['speedup']:.2f}x of one ({one['tokens_per_s']:,.0f} -> "
          f"{many['tokens_per_s']:,.0f} tokens/s); max relative loss difference {res['max_rel_loss_diff']:.2e}")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--lengths", type=int, nargs="+", default=[2**16, 2**18, 2**20])
    m.add_argument("--steps", type=int, default=5)
    m.add_argument("--n-layer", type=int, default=6)
    m.add_argument("--d-model", type=int, default=128)
    s = sub.add_parser("scaling")
    s.add_argument("--nproc", type=int, default=2)
    s.add_argument("overrides", nargs="*", default=[
        "model=small", "data.seq_len=8192", "train.batch_size=32", "train.max_steps=120", "train.warmup_steps=10",
        "train.log_every=10", "train.ckpt_every=0", "eval.val_tokens=262144"],
        help="pipeline overrides (global batch must divide by --nproc)")
    args = ap.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    if args.what == "memory":
        rows = bench_memory(args.lengths, args.steps, args.n_layer, args.d_model)
        path = RESULTS / "pretrain_memory.json"
        path.write_text(json.dumps(rows, indent=2) + "\n")
    else:
        res = bench_scaling(args.nproc, args.overrides)
        path = RESULTS / f"pretrain_ddp_{args.nproc}.json"
        path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
