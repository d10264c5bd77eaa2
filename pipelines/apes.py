"""Great-ape species classification: prepare -> train -> evaluate (Hydra configs in mambaseq.configs).

    mambaseq apes run                                   # the README main job (CPU, minutes)
    mambaseq apes run experiment=apes_gpu               # contexts 2^12 and 2^16 on a GPU
    mambaseq apes train model=small data.seq_len=4096   # any override of configs/apes.yaml
    python -m mambaseq.pipelines.apes evaluate ...      # the same without the console script

Windows come from a token store whose sequences carry a species label and a split chosen by
homologous region, so test windows come from regions no species showed during training.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mambaseq.config import MambaConfig
from mambaseq.data import (VOCAB, Interval, RandomWindows, TiledWindows, TokenStore, rc_augment, read_bed,
                           split_intervals, write_bed)
from mambaseq.fileio import write_json
from mambaseq.model import MambaForSequenceClassification, load_pretrained
from mambaseq.settings import ConfigError, check_settings, compose
from mambaseq.training import TrainConfig, autocast_context, classification_loss, latest_checkpoint, resolve_device
from mambaseq.training import train as train_loop

from .apes_report import accuracy_ci, classification_metrics, kmer_baselines, plot_accuracy_vs_length, write_report

Config = dict[str, Any]


# --- configuration ----------------------------------------------------------------------------------
SETTINGS = {
    "seed": "int>=0", "data.seq_len": "int>=1", "data.seq_lens": "[int>=1]|null", "data.tokens_per_step": "int>=1|null",
    "data.fractions": "[float>=0]", "data.seed": "int>=0", "data.sim_length": "int>=1", "data.rc_augment": "bool",
    "data.region_size": "int>=1|null", "data.max_n_fraction": "float>=0|null", "data.mask_n": "bool",
    "data.sim_te_rate_scale": "float>=0", "eval.test_windows_per_class": "int>=1",
    "eval.val_windows_per_class": "int>=1", "eval.baseline_train_tokens": "int>=0|null",
    "eval.baseline_min_windows": "int>=1", "eval.baseline_max_windows": "int>=1|null",
}


def load_config(overrides: Sequence[str] = (), config_name: str = "apes") -> Config:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides -> plain nested dict, with every setting
    checked by name (ConfigError) before anything runs."""
    cfg = compose(config_name, overrides)
    check_settings(cfg, SETTINGS)
    TrainConfig.from_dict({k: v for k, v in cfg["train"].items() if k not in ("seq_len", "seed")})
    try:  # the model's fields too (e.g. kmer_size with rc_equivariant), before any data is prepared
        build_model(cfg, n_labels=2, device="meta")
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model: {e}") from e
    return cfg


def seq_lens(cfg: Config) -> list[int]:
    """Context lengths of the run: data.seq_lens if given, else [data.seq_len]."""
    return [int(x) for x in (cfg["data"].get("seq_lens") or [cfg["data"]["seq_len"]])]


def run_dir(cfg: Config, store: TokenStore, seq_len: int) -> Path:
    return Path(cfg["out_dir"]) / f"{store.source.get('kind', 'data')}_{cfg['model']['size']}_L{seq_len}"


# --- steps -----------------------------------------------------------------------------------------
def prepare(cfg: Config) -> TokenStore:
    """Prepare (or reuse) the great-apes store chosen by ``data.source``. Needs Biopython only when it
    has to parse FASTA/MAF; an already prepared store (``data.store``) is opened with numpy alone."""
    d = cfg["data"]
    if d.get("store"):
        return TokenStore(d["store"])
    from mambaseq.data_prep.apes import prepare_apes

    return prepare_apes(d["source"], d["out_root"], fasta=d.get("fasta"), val_chroms=d.get("val_chroms") or (),
                        test_chroms=d.get("test_chroms") or (), maf=d.get("maf"), region_size=d.get("region_size"),
                        fractions=tuple(d["fractions"]), seed=int(d["seed"]), sim_length=int(d["sim_length"]),
                        sim_te_rate_scale=float(d.get("sim_te_rate_scale", 25.0)))


def load_splits(cfg: Config, store: TokenStore) -> dict[str, list[Interval]]:
    """train/val/test intervals: from ``data.split_bed`` (BED, split in the name column) if given, else the
    splits recorded in the store at preparation (by homologous region or held-out chromosome)."""
    bed = cfg["data"].get("split_bed")
    if not bed:
        return split_intervals(store, by="store")
    out: dict[str, list[Interval]] = {"train": [], "val": [], "test": []}
    for iv in read_bed(bed):
        if iv.split not in out:
            raise ValueError(f"{bed}: split (4th column) must be train/val/test, got {iv.split!r} for {iv}")
        out[iv.split].append(iv)
    return out


def build_model(cfg: Config, n_labels: int, device: str | None = None) -> MambaForSequenceClassification:
    """The classifier of ``cfg["model"]`` (``MambaConfig.from_name(size, **other keys)``); ``device="meta"``
    only checks the configuration (no memory)."""
    m = dict(cfg["model"])
    size = m.pop("size")
    mcfg = MambaConfig.from_name(size, vocab_size=len(VOCAB), num_labels=n_labels, **m)
    if device is None:
        return MambaForSequenceClassification(mcfg)
    with torch.device(device):
        return MambaForSequenceClassification(mcfg)


def _n_policy(cfg: Config) -> dict[str, Any]:
    """Window options that keep assembly gaps from being a cue: windows with more than
    ``data.max_n_fraction`` N are left out, the remaining N become random bases (``data.mask_n``)."""
    d = cfg["data"]
    frac = d.get("max_n_fraction")
    return {"max_n_fraction": None if frac is None else float(frac), "mask_n": bool(d.get("mask_n", True))}


def _baselines(cfg: Config, store: TokenStore, splits: dict[str, list[Interval]], test: TiledWindows,
               seq_len: int) -> dict[int, float]:
    """{k: test accuracy} of k-mer logistic regressions (k in ``eval.baseline_ks``, N counted) fitted on
    random train windows (same split and N policy) and scored on the same test windows as the network."""
    ev = cfg["eval"]
    n_tokens = ev.get("baseline_train_tokens")
    if n_tokens is None:  # the same number of training tokens as the network saw
        t = cfg["train"]
        tps = cfg["data"].get("tokens_per_step") or int(t["batch_size"]) * seq_len
        n_tokens = int(t["max_steps"]) * int(tps)
    if int(n_tokens) <= 0:
        return {}
    n_tokens = int(n_tokens)
    n = max(int(ev.get("baseline_min_windows", 256)), n_tokens // seq_len)
    n = min(n, int(ev.get("baseline_max_windows") or n))
    x, y = RandomWindows(store, splits["train"], seq_len, seed=int(cfg["seed"]) + 1, balance_labels=True,
                         **_n_policy(cfg)).batch(0, n)
    tx, ty = zip(*[(a.numpy(), b.numpy()) for a, b in test.batches(256)])
    ks = [int(k) for k in cfg["eval"].get("baseline_ks", (3, 4, 5, 6))]
    return kmer_baselines(x.numpy(), y.numpy(), np.concatenate(tx), np.concatenate(ty), ks)


def _predict(model: torch.nn.Module, windows: TiledWindows, batch_size: int, device: torch.device,
             precision: str) -> tuple[np.ndarray, np.ndarray, float]:
    """-> (true labels, predicted labels, mean cross-entropy) over every window."""
    model.eval()
    ys, ps, loss = [], [], 0.0
    with torch.no_grad(), autocast_context(device, precision):
        for x, y in windows.batches(batch_size):
            logits = model(x.to(device)).float()
            loss += float(torch.nn.functional.cross_entropy(logits, y.to(device), reduction="sum"))
            ys.append(y.numpy())
            ps.append(logits.argmax(-1).cpu().numpy())
    return np.concatenate(ys), np.concatenate(ps), loss / max(len(windows), 1)


def _eval_batch(cfg: Config, seq_len: int) -> int:
    return max(1, int(cfg["eval"]["tokens_per_batch"]) // seq_len)


def train(cfg: Config, seq_len: int | None = None, resume: bool = False, store: TokenStore | None = None) -> Path:
    """Train a classifier on the train split; validate on val windows. Returns the run directory."""
    store = store or prepare(cfg)
    seq_len = seq_len or seq_lens(cfg)[0]
    splits = load_splits(cfg, store)
    seed = int(cfg["seed"])
    tps = cfg["data"].get("tokens_per_step")  # several lengths at equal tokens per step
    batch = max(1, int(tps) // seq_len) if tps else int(cfg["train"]["batch_size"])
    tcfg = TrainConfig.from_dict({**cfg["train"], "seq_len": seq_len, "seed": seed, "batch_size": batch})
    base = RandomWindows(store, splits["train"], seq_len, seed=seed, balance_labels=True, **_n_policy(cfg))
    by_len: dict[int, RandomWindows] = {seq_len: base}
    rc = bool(cfg["data"]["rc_augment"])

    def batch_fn(step: int, length: int, batch_size: int):
        if length not in by_len:
            by_len[length] = base.with_length(length)
        x, y = by_len[length].batch(step, batch_size)
        if rc:  # strand is arbitrary in DNA; the flip pattern is a function of the step (exact resume)
            x = rc_augment(x, 0.5, torch.Generator().manual_seed(seed * 1_000_003 + step))
        return x, y

    val = TiledWindows(store, splits["val"], seq_len, max_per_label=int(cfg["eval"]["val_windows_per_class"]),
                       seed=seed, **_n_policy(cfg))
    device = resolve_device(tcfg.device)

    def eval_fn(model: torch.nn.Module, step: int) -> dict[str, float]:
        y, p, loss = _predict(model, val, _eval_batch(cfg, seq_len), device, tcfg.precision)
        return {"acc": float((y == p).mean()), "loss": loss}

    torch.manual_seed(seed)
    model = build_model(cfg, len(store.label_names))
    out = run_dir(cfg, store, seq_len)
    write_bed([iv for name in ("train", "val", "test") for iv in splits[name]], out / "splits.bed")
    print(f"training {cfg['model']['size']} ({sum(p.numel() for p in model.parameters()):,} params) on "
          f"{seq_len:,}-base windows, {tcfg.max_steps} steps x {tcfg.batch_size} -> {out}")
    res = train_loop(model, classification_loss, batch_fn, tcfg, out, eval_fn=eval_fn, resume=resume,
                     extra_state={"labels": store.label_names, "store": str(store.path), "seq_len": seq_len})
    write_json({"step": res.step, "tokens_per_s": res.tokens_per_s, "peak_memory_gib": res.peak_memory_gib,
                "wall_s": res.wall_s, "stopped_early": res.stopped_early, "device": str(device),
                **res.metrics}, out / "train_summary.json")
    return out


def evaluate(cfg: Config, seq_len: int | None = None, store: TokenStore | None = None) -> dict[str, Any]:
    """Evaluate the latest checkpoint on held-out test regions; writes metrics.json, the sklearn report
    and the row-normalised confusion matrix into the run directory. Returns the metrics."""
    store = store or prepare(cfg)
    seq_len = seq_len or seq_lens(cfg)[0]
    out = run_dir(cfg, store, seq_len)
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        raise FileNotFoundError(f"{out}: no checkpoint to evaluate; run `mambaseq apes train` first")
    device = resolve_device(cfg["train"].get("device", "auto"))
    model = load_pretrained(ckpt).to(device)
    splits = load_splits(cfg, store)
    test = TiledWindows(store, splits["test"], seq_len, max_per_label=int(cfg["eval"]["test_windows_per_class"]),
                        seed=int(cfg["seed"]), **_n_policy(cfg))
    t0 = time.perf_counter()
    y, p, loss = _predict(model, test, _eval_batch(cfg, seq_len), device, cfg["train"].get("precision", "auto"))
    dt = time.perf_counter() - t0
    labels = store.label_names
    m = classification_metrics(y, p, labels)
    summary_path = out / "train_summary.json"
    train_summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    from mambaseq.data_prep.apes import describe  # numpy-only import chain

    n_ok = int((y == p).sum())
    m["accuracy_ci95"] = accuracy_ci(n_ok, len(y))
    m["kmer_baselines"] = {str(k): v for k, v in _baselines(cfg, store, splits, test, seq_len).items()}
    best_k = max(m["kmer_baselines"], key=m["kmer_baselines"].get) if m["kmer_baselines"] else None
    m["best_kmer_baseline"] = None if best_k is None else {
        "k": int(best_k), "accuracy": m["kmer_baselines"][best_k],
        "accuracy_ci95": accuracy_ci(round(m["kmer_baselines"][best_k] * len(y)), len(y))}
    m["kmer_baseline_accuracy"] = None if best_k is None else m["kmer_baselines"][best_k]
    m.update(seq_len=seq_len, test_loss=loss, eval_tokens_per_s=len(y) * seq_len / dt, checkpoint=str(ckpt),
             data=describe(store), synthetic=store.synthetic, source=store.source.get("kind"),
             n_policy=_n_policy(cfg), test_windows_left_out_for_n=test.n_left_out,
             model=cfg["model"], train=train_summary, device=str(device))
    syn = " [SIMULATED data]" if store.synthetic else ""
    title = (f"great apes, {seq_len:,}-base windows, test acc {m['accuracy']:.3f} "
             f"(chance {m['chance_uniform']:.2f}){syn}")
    write_report(out, y, p, labels, m, title)
    lo, hi = m["accuracy_ci95"]
    if best_k is None:
        base_txt = ""
    else:
        blo, bhi = m["best_kmer_baseline"]["accuracy_ci95"]
        base_txt = (f"; best k-mer baseline {m['kmer_baseline_accuracy']:.3f} [{blo:.3f}, {bhi:.3f}] "
                    f"(k={best_k} logistic regression, k=3..6 tried)")
    print(f"TEST accuracy {m['accuracy']:.3f} [95% CI {lo:.3f}, {hi:.3f}] vs chance {m['chance_uniform']:.3f} "
          f"(balanced acc {m['balanced_accuracy']:.3f}{base_txt}) on {len(y)} windows of {seq_len:,} bases from "
          f"held-out regions; {describe(store)} -> {out / 'metrics.json'}")
    return m


def run_all(cfg: Config, resume: bool = False) -> list[dict[str, Any]]:
    """prepare -> (train -> evaluate) for every context length; plots accuracy vs length if several."""
    t0 = time.perf_counter()
    store = prepare(cfg)
    results = []
    for L in seq_lens(cfg):
        train(cfg, L, resume=resume, store=store)
        results.append(evaluate(cfg, L, store=store))
    out = Path(cfg["out_dir"])
    keys = ("seq_len", "accuracy", "accuracy_ci95", "balanced_accuracy", "chance_uniform", "kmer_baseline_accuracy",
            "kmer_baselines", "n_windows", "synthetic", "source")
    summary = [{k: r[k] for k in keys} | {"tokens_per_s": r["train"].get("tokens_per_s"),
                                          "peak_memory_gib": r["train"].get("peak_memory_gib")} for r in results]
    write_json({"results": summary, "wall_s": time.perf_counter() - t0}, out / "summary.json")
    if len(results) > 1:
        syn = " [SIMULATED]" if store.synthetic else ""
        plot_accuracy_vs_length(results, out / "accuracy_vs_length.png", f"great apes ({store.source.get('kind')}){syn}")
    for r in summary:
        base = r["kmer_baseline_accuracy"]
        print(f"  L={r['seq_len']:>8,}  test acc {r['accuracy']:.3f}  (chance {r['chance_uniform']:.3f}, best k-mer baseline "
              f"{'-' if base is None else f'{base:.3f}'})  "
              f"train {r['tokens_per_s'] or 0:,.0f} tok/s")
    print(f"done in {time.perf_counter() - t0:.0f} s; results in {out}")
    return results


# --- CLI ---------------------------------------------------------------------------------------------
ACTIONS = ("prepare", "train", "evaluate", "run", "show-config")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``mambaseq apes {prepare,train,evaluate,run,show-config} [hydra overrides ...]``."""
    p = subparsers.add_parser("apes", help="great-ape species classification (prepare/train/evaluate/run)",
                              description=__doc__.split("\n\n")[0])
    _add_args(p)


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=small data.seq_len=4096")
    p.add_argument("--config-name", default="apes", help="primary config in mambaseq.configs")
    p.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")


def run(args: argparse.Namespace) -> int:
    """CLI entry (``mambaseq apes ...``)."""
    cfg = load_config(args.overrides, args.config_name)
    if args.action == "show-config":
        import yaml

        print(yaml.safe_dump(cfg, sort_keys=False))
    elif args.action == "prepare":
        prepare(cfg)
    elif args.action == "train":
        store = prepare(cfg)
        for L in seq_lens(cfg):
            train(cfg, L, resume=args.resume, store=store)
    elif args.action == "evaluate":
        store = prepare(cfg)
        for L in seq_lens(cfg):
            evaluate(cfg, L, store=store)
    else:
        run_all(cfg, resume=args.resume)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mambaseq.pipelines.apes", description=__doc__.split("\n\n")[0])
    _add_args(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
