"""The great-apes classifier's wide head alone (CPU): how far one pass of the recipe's steps takes a linear map on
the standardised 8-mer profile, per context length and learning rate. Prints a table, writes JSON under
bench/results/.

    python bench/apes_wide_head.py [--lengths 1024 16384 65536] [--scales 1 10 25] [overrides ...]

Why: at 2^16 bases the GPU sweep's network stayed below a 6-mer logistic regression fitted to convergence
(docs/apes.md). This isolates the head that carries most of the k-mer signal (``model.KmerProfileHead``, Wide &
Deep): the same training windows in the same order as ``mambaseq apes train`` draws them at the target length
(``RandomWindows``, seed, balanced labels, N policy), the same standardisation (fitted on the run's 512
``data.wide_fit_windows``), AdamW (betas 0.9/0.95, weight decay 0.1) with the run's warmup + cosine schedule, at
``train.lr`` x each scale (``model.wide_lr_scale``), scored on the run's test windows. The Mamba part of the model
is left out, so this is a lower bound on what the head contributes, not the classifier's accuracy. Overrides are
Hydra overrides of ``mambaseq apes`` (default: ``experiment=apes_context``, the GPU sweep's recipe); windows a
step = tokens_per_step / length (or train.batch_size), steps = train.max_steps.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipelines.apes as apes  # noqa: E402
from mambaseq.data import RandomWindows, TiledWindows  # noqa: E402
from mambaseq.fileio import write_json  # noqa: E402
from mambaseq.model import KmerProfileHead  # noqa: E402
from mambaseq.training.optim import warmup_cosine  # noqa: E402


def one_length(overrides: list[str], L: int, scales: list[float], k: int) -> list[dict]:
    cfg = apes.load_config([*overrides, f"data.seq_len={L}", "train.progress=false"])
    store = apes.prepare(cfg)
    splits, seed, tr = apes.load_splits(cfg, store), int(cfg["seed"]), cfg["train"]
    tps = cfg["data"].get("tokens_per_step")
    per_step = max(1, int(tps) // L) if tps else int(tr["batch_size"])
    steps, lr = int(tr["max_steps"]), float(tr["lr"])
    policy = apes.n_policy(cfg)
    train = RandomWindows(store, splits["train"], L, seed=seed, balance_labels=True, **policy)
    fit = RandomWindows(store, splits["train"], L, seed=seed + 2, balance_labels=True, **policy)
    test = TiledWindows(store, splits["test"], L, max_per_label=int(cfg["eval"]["test_windows_per_class"]),
                        seed=seed, **policy)
    head = KmerProfileHead(k, len(store.label_names), "fit")
    head.fit_standardizer(fit.batch(0, int(cfg["data"].get("wide_fit_windows", 512)))[0])
    head.eval()
    with torch.no_grad():
        xte, yte = zip(*[(head.norm(head.profile(x)), y) for x, y in test.batches(64)])
    xte, yte = torch.cat(xte), torch.cat(yte)
    rows = []
    for s in scales:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        lin = torch.nn.Linear(xte.shape[1], len(store.label_names))
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
        opt = torch.optim.AdamW(lin.parameters(), lr=lr * s, weight_decay=float(tr["weight_decay"]),
                                betas=tuple(tr["betas"]))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: warmup_cosine(t, int(tr["warmup_steps"]), steps, float(tr["min_lr_ratio"])))
        losses = []
        for t in range(steps):
            x, y = train.batch(t, per_step)
            with torch.no_grad():
                f = head.norm(head.profile(x))
            loss = torch.nn.functional.cross_entropy(lin(f), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss))
        with torch.no_grad():
            acc = float((lin(xte).argmax(-1) == yte).float().mean())
        row = {"seq_len": L, "k": k, "windows_per_step": per_step, "steps": steps, "lr": lr * s, "wide_lr_scale": s,
               "test_accuracy": acc, "test_windows": len(yte), "train_loss_last10": sum(losses[-10:]) / 10,
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"  L={L:>6,} scale {s:>5g} (lr {lr * s:.3g}): test {acc:.3f} on {len(yte)} windows, "
              f"train loss (last 10 steps) {row['train_loss_last10']:.3f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 16384, 65536])
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0, 25.0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("overrides", nargs="*", default=None)
    a = ap.parse_args()
    overrides = a.overrides if a.overrides else ["experiment=apes_context"]
    torch.manual_seed(0)
    rows = [r for L in a.lengths for r in one_length(overrides, L, a.scales, a.k)]
    print(f"\nwide head alone ({a.k}-mer profile), one pass of the recipe's steps; {' '.join(overrides)}")
    print("| bases | windows a step x steps | lr scale | lr | test accuracy | train loss (last 10) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seq_len']:,} | {r['windows_per_step']} x {r['steps']} | {r['wide_lr_scale']:g} | {r['lr']:.3g} | "
              f"{r['test_accuracy']:.3f} ({r['test_windows']}) | {r['train_loss_last10']:.3f} |")
    out = a.out or ROOT / "bench" / "results" / f"apes_wide_head_{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json({"overrides": overrides, "torch": torch.__version__, "device": "cpu", "rows": rows,
                "note": "SIMULATED data; the wide head alone (no Mamba features), one pass"}, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
