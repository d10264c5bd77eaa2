"""The great-apes classifier's wide head alone (CPU): how far the run's steps take a linear map on the
standardised 8-mer profile, per context length and learning-rate scale. Prints a table, writes JSON under
bench/results/.

    python bench/apes_wide_head.py [--lengths 1024 16384 65536] [--scales 1 10 25] [--main-job] [KEY=VALUE ...]

Why: at 2^16 bases the GPU sweep's network stayed below a 6-mer logistic regression fitted to convergence
(docs/apes.md). This isolates the head that carries most of the k-mer signal (``model.KmerProfileHead``, Wide &
Deep) and trains it as ``mambaseq apes train`` trains it inside the network: the run's training batches
(``RandomWindows``: seed, balanced labels, N policy; the sequence-length warmup's shorter windows and larger
batches in its first steps; ``data.rc_augment`` strand flips), the standardisation fitted on the run's
``data.wide_fit_windows``, the run's AdamW groups (no decay on the bias) at ``train.lr`` x scale
(``model.wide_lr_scale``), warmup + cosine schedule and gradient clipping; scored on the run's test windows,
on both strands when ``eval.rc_average``. Not reproduced: the Mamba part (its logits add to the head's, and the
gradient clipping is over the whole model), micro-batching. So this says what the head alone can reach, not the
classifier's accuracy.

KEY=VALUE arguments are Hydra overrides of ``mambaseq apes``, added to ``experiment=apes_context`` (the GPU
sweep's recipe) unless one names an ``experiment`` or ``--main-job`` asks for the README main job's recipe.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipelines.apes as apes  # noqa: E402
from mambaseq import runs  # noqa: E402
from mambaseq.data import RandomWindows, TiledWindows, reverse_complement  # noqa: E402
from mambaseq.fileio import write_json  # noqa: E402
from mambaseq.model import KmerProfileHead  # noqa: E402
from mambaseq.training.optim import build_optimizer, build_scheduler  # noqa: E402


def one_length(overrides: list[str], L: int, scales: list[float], k: int) -> list[dict]:
    cfg = apes.load_config([*overrides, f"data.seq_len={L}", "train.progress=false"])
    store = apes.prepare(cfg)
    splits, seed = apes.load_splits(cfg, store), int(cfg["seed"])
    tcfg = runs.train_config(cfg, L)
    schedule = tcfg.seq_schedule()
    policy = apes.n_policy(cfg)
    batch_fn = apes.train_batches(cfg, store, splits, L)  # the run's batches
    fit = RandomWindows(store, splits["train"], L, seed=seed + 2, balance_labels=True, **policy)
    test = TiledWindows(store, splits["test"], L, max_per_label=int(cfg["eval"]["test_windows_per_class"]),
                        seed=seed, **policy)
    n_labels = len(store.label_names)
    both = bool(cfg["eval"].get("rc_average", False))
    fit_ids = fit.batch(0, int(cfg["data"].get("wide_fit_windows", 512)))[0]
    rows = []
    for s in scales:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        head = KmerProfileHead(k, n_labels, "fit", s)
        head.fit_standardizer(fit_ids)
        opt = build_optimizer(head, tcfg.lr, tcfg.weight_decay, tcfg.betas)
        sched = build_scheduler(opt, tcfg.warmup_steps, tcfg.max_steps, tcfg.min_lr_ratio)
        losses = []
        for step in range(tcfg.max_steps):
            x, y = batch_fn(step, *schedule.at(step))
            loss = torch.nn.functional.cross_entropy(head(x), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), tcfg.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
        head.eval()
        hits = []
        with torch.no_grad():
            for x, y in test.batches(64):
                logits = head(x) if not both else 0.5 * (head(x) + head(reverse_complement(x)))
                hits.append(logits.argmax(-1) == y)
        hits = torch.cat(hits)
        last = losses[-10:]
        row = {"seq_len": L, "k": k, "windows_per_step": schedule.at(tcfg.max_steps - 1)[1], "steps": tcfg.max_steps,
               "lr": tcfg.lr * s, "wide_lr_scale": s, "test_accuracy": float(hits.float().mean()),
               "test_windows": len(hits), "both_strands": both, "train_loss_last10": sum(last) / len(last),
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"  L={L:>6,} scale {s:>5g} (lr {row['lr']:.3g}): test {row['test_accuracy']:.3f} on {len(hits)} "
              f"windows, train loss (last 10 steps) {row['train_loss_last10']:.3f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="KEY=VALUE arguments anywhere are Hydra overrides (see the module docstring)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 16384, 65536], help="context lengths (bases)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0, 25.0],
                    help="learning-rate scales of the head (model.wide_lr_scale values) to train at")
    ap.add_argument("--k", type=int, default=8, help="k of the k-mer profile (the recipes' wide head: 8)")
    ap.add_argument("--main-job", action="store_true", help="the README main job's recipe, not experiment=apes_context")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/apes_wide_head_<time>.json)")
    a = ap.parse_args([v for v in argv if v not in overrides])
    if not a.main_job and not any(o.startswith("experiment=") for o in overrides):
        overrides = ["experiment=apes_context", *overrides]
    rows = [r for L in a.lengths for r in one_length(overrides, L, a.scales, a.k)]
    print(f"\nwide head alone ({a.k}-mer profile), the run's steps; overrides: {' '.join(overrides) or '(none)'}")
    print("| bases | windows a step x steps | lr scale | lr | test accuracy | train loss (last 10) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seq_len']:,} | {r['windows_per_step']} x {r['steps']} | {r['wide_lr_scale']:g} | {r['lr']:.3g} | "
              f"{r['test_accuracy']:.3f} ({r['test_windows']}) | {r['train_loss_last10']:.3f} |")
    out = a.out or ROOT / "bench" / "results" / f"apes_wide_head_{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json({"overrides": overrides, "torch": torch.__version__, "device": "cpu", "rows": rows,
                "note": "SIMULATED data; the wide head alone (no Mamba features), trained as in the run"}, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
