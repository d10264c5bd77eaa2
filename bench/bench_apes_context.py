"""Great-apes accuracy against context length (GPU): Mamba vs the best k-mer baseline at every length.

    python bench/bench_apes_context.py                      # experiment=apes_context: 2^10 .. 2^16, SIMULATED
    python bench/bench_apes_context.py --lengths 1024 4096 --parallel 2 model=tiny train.max_steps=50
    python bench/bench_apes_context.py --negative-control   # also the Debian chr22 alignment (expected: chance)

Each context length is trained and evaluated by the great-apes pipeline (``mambaseq apes run``) in its own
process (``--parallel`` of them share the GPU), on one prepared store. Writes
``bench/results/apes_context.json`` (rows: seq_len, accuracy, ci_low, ci_high, baselines, ...) and a plot
``bench/results/apes_context.png``; prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mambaseq.fileio import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def _run(action: str, overrides: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mambaseq", "apes", action, *overrides]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _row(metrics: dict) -> dict:
    lo, hi = metrics["accuracy_ci95"]
    best = metrics.get("best_kmer_baseline") or {}
    return {"seq_len": metrics["seq_len"], "accuracy": metrics["accuracy"], "ci_low": lo, "ci_high": hi,
            "n_windows": metrics["n_windows"], "chance": metrics["chance_uniform"],
            "baselines": {f"{k}-mer logistic regression": v for k, v in metrics["kmer_baselines"].items()},
            "best_baseline": best.get("accuracy"), "best_baseline_k": best.get("k"),
            "best_baseline_ci": best.get("accuracy_ci95"), "margin_over_best_baseline":
            None if best.get("accuracy") is None else metrics["accuracy"] - best["accuracy"],
            "train_tokens_per_s": metrics["train"].get("tokens_per_s"), "train_steps": metrics["train"].get("step"),
            "peak_memory_gib": metrics["train"].get("peak_memory_gib"), "data": metrics["data"],
            "source": metrics["source"], "synthetic": metrics["synthetic"]}


def sweep(lengths: list[int], overrides: list[str], parallel: int, work: Path) -> list[dict]:
    """Prepare once, then ``apes run`` per length (``parallel`` at a time); returns one row per length."""
    work.mkdir(parents=True, exist_ok=True)
    base = [*overrides, f"out_dir={work / 'runs'}"]
    prep = _run("prepare", base, work / "prepare.log")
    if prep.wait() != 0:
        raise SystemExit(f"prepare failed: see {work / 'prepare.log'}\n{(work / 'prepare.log').read_text()[-2000:]}")
    pending, running, rows = list(lengths), [], {}
    while pending or running:
        while pending and len(running) < parallel:
            L = pending.pop(0)
            log = work / f"L{L}.log"
            running.append((L, log, _run("run", [*base, f"data.seq_len={L}"], log)))
            print(f"started L={L:,} -> {log}", flush=True)
        time.sleep(5)
        for item in list(running):
            L, log, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                print(f"L={L:,} FAILED (exit {proc.returncode}):\n{log.read_text()[-3000:]}", flush=True)
                continue
            metrics_path = next((work / "runs").glob(f"*_L{L}/metrics.json"))
            rows[L] = _row(json.loads(metrics_path.read_text()))
            print(f"done L={L:,}: accuracy {rows[L]['accuracy']:.3f}", flush=True)
    return [rows[L] for L in lengths if L in rows]


def plot(rows: list[dict], control: dict | None, path: Path) -> None:
    from mambaseq.reports import pyplot, save_figure

    plt = pyplot()
    xs = [r["seq_len"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(xs, [r["accuracy"] for r in rows], yerr=[[r["accuracy"] - r["ci_low"] for r in rows],
                [r["ci_high"] - r["accuracy"] for r in rows]], fmt="o-", capsize=3, label="Mamba (95% CI)")
    ax.plot(xs, [r["best_baseline"] for r in rows], "s:", label="best k-mer logistic regression (k=3..6)")
    ax.plot(xs, [r["chance"] for r in rows], "--", color="gray", label="chance")
    if control:
        ax.errorbar([control["seq_len"]], [control["accuracy"]], yerr=[[control["accuracy"] - control["ci_low"]],
                    [control["ci_high"] - control["accuracy"]]], fmt="x", color="red", capsize=3,
                    label="negative control (real chr22 alignment)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (bases)")
    ax.set_ylabel("test accuracy (5 species)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("great apes, SIMULATED genomes (mambaseq simulator)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    ap.add_argument("--parallel", type=int, default=4, help="lengths trained at once (one process each)")
    ap.add_argument("--negative-control", action="store_true",
                    help="also train/evaluate on Debian's real chr22 alignment (data.source=maf) at --control-length")
    ap.add_argument("--control-length", type=int, default=4096)
    ap.add_argument("--control-steps", type=int, default=150)
    ap.add_argument("--work", type=Path, default=Path("runs/apes_context"))
    ap.add_argument("--out", type=Path, default=RESULTS / "apes_context.json")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides (after experiment=apes_context)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    overrides = ["experiment=apes_context", "train.progress=false", *args.overrides]
    procs = []
    if args.negative_control:  # runs beside the sweep; small and short
        (args.work / "control").mkdir(parents=True, exist_ok=True)
        ctrl = [*overrides, "data.source=maf", "data.region_size=null", "data.fractions=[0.8,0.1,0.1]",
                f"data.seq_len={args.control_length}", "data.seq_lens=null",
                f"train.max_steps={args.control_steps}", f"out_dir={args.work / 'control' / 'runs'}"]
        procs.append(_run("run", ctrl, args.work / "control" / "run.log"))
    rows = sweep(args.lengths, overrides, args.parallel, args.work)
    control = None
    for p in procs:
        p.wait()
        found = list((args.work / "control" / "runs").glob("*/metrics.json"))
        if p.returncode == 0 and found:
            control = _row(json.loads(found[0].read_text()))
        else:
            print((args.work / "control" / "run.log").read_text()[-3000:])
    out = {"rows": rows, "negative_control": control, "overrides": overrides,
           "device": os.environ.get("CUDA_VISIBLE_DEVICES", "default"), "wall_s": time.perf_counter() - t0,
           "note": "SIMULATED data (mambaseq great-ape simulator); negative control: REAL chr22 alignment"}
    try:
        import torch

        out["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        out["torch"] = torch.__version__
    except Exception:  # noqa: BLE001 - reporting only
        pass
    write_json(out, args.out)
    if rows:
        plot(rows, control, args.out.with_suffix(".png"))
    print(f"\n{'seq_len':>8} {'accuracy':>9} {'95% CI':>15} {'best k-mer':>11} {'k':>2} {'margin':>7} {'windows':>8}")
    for r in rows + ([control] if control else []):
        tag = "  (negative control, REAL chr22 alignment)" if r is control else ""
        bb = r["best_baseline"]
        bb_txt, margin = ("-", "-") if bb is None else (f"{bb:.3f}", f"{r['accuracy'] - bb:+.3f}")
        print(f"{r['seq_len']:>8,} {r['accuracy']:>9.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
              f"{bb_txt:>11} {r['best_baseline_k'] or '-':>2} {margin:>7} {r['n_windows']:>8}{tag}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
