"""Great-ape species classification: prepare -> train -> evaluate (Hydra configs in mambaseq.configs).

    mambaseq apes run                                   # the README main job (CPU, minutes)
    mambaseq apes run experiment=apes_gpu               # contexts 2^12 and 2^16 on a GPU
    mambaseq apes train model=small data.seq_len=4096   # any override of configs/apes.yaml
    mambaseq apes run init_from=runs/pretrain/.../checkpoints/step_00000200   # fine-tune a pretrained LM
    python -m mambaseq.pipelines.apes evaluate ...      # the same without the console script

Windows come from a token store whose sequences carry a species label and a split chosen by
homologous region, so test windows come from regions no species showed during training.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mambaseq import runs
from mambaseq.data import (VOCAB, Interval, RandomWindows, TiledWindows, TokenStore, describe, rc_augment,
                           read_split_bed, reverse_complement, split_intervals, write_bed)
from mambaseq.data.kmers import kmer_baseline_predictions
from mambaseq.fileio import write_json
from mambaseq.reports import plot_accuracy_vs_length, write_classification_report
from mambaseq.settings import ConfigError, check_settings
from mambaseq.training import classification_loss, resolve_device
from mambaseq.training import train as train_loop
from mambaseq.training.evaluation import (classification_counts, classification_metrics, cluster_accuracy_ci,
                                          confusion_pairs, eval_loop)

Config = runs.Config


# --- configuration ----------------------------------------------------------------------------------
SETTINGS = {
    "data.seq_lens": "[int>=1]|null", "data.fractions": "fractions", "data.seed": "int>=0",
    "data.sim_length": "int>=1", "data.rc_augment": "bool", "data.region_size": "int>=1|null",
    "data.max_n_fraction": "fraction|null", "data.mask_n": "bool", "data.sim_te_rate_scale": "float>=0",
    "eval.test_windows_per_class": "int>=1", "eval.val_windows_per_class": "int>=1",
    "eval.baseline_train_tokens": "int>=0|null", "eval.baseline_min_windows": "int>=1",
    "eval.baseline_max_windows": "int>=1|null", "eval.rc_average": "bool", "init_weights": "bool",
    "init_from": "dir|null",
    "data.split_bed": "file|null", "data.wide_fit_windows": "int>=2",
}


def load_config(overrides: Sequence[str] = (), config_name: str = "apes") -> Config:
    """``configs/<config_name>.yaml`` with Hydra overrides, every setting checked by name (ConfigError)
    before anything runs, the model's fields included."""
    cfg = runs.load_config(config_name, overrides, SETTINGS)
    if not cfg.get("init_from"):  # e.g. kmer_size with rc_equivariant, before any data is prepared
        try:
            build_model(cfg, n_labels=2, device="meta")
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model: {e}") from e
    return cfg


def check_data_source(cfg: Config) -> None:
    """The files the data step will read exist and the FASTA source has held-out chromosomes (ConfigError
    naming the key), so a typo fails at once instead of with a traceback from inside data preparation.
    Checked by ``prepare`` (every step starts with it), not at load: ``show-config`` of a recipe whose
    files are still to be downloaded (``experiment=apes_genomes_gpu``) works."""
    from mambaseq.data_prep.apes import SOURCES  # numpy only; Biopython is imported when a file is parsed
    from mambaseq.data_prep.sources import resolve_source

    d = cfg["data"]
    if d.get("store"):
        return check_settings(cfg, {"data.store": "dir"})
    try:
        kind = resolve_source(d["source"], SOURCES, d.get("fasta"), d.get("maf"))
    except ValueError as e:  # "data.source must be one of ..."
        raise ConfigError(str(e)) from None
    check_settings(cfg, {"data.maf": "file|null"})
    if kind == "fasta":
        check_settings(cfg, {"data.fasta": "file"})
        if not d.get("test_chroms"):
            raise ConfigError(f"data.test_chroms={d.get('test_chroms')!r}: data.source=fasta needs held-out "
                              "chromosomes (FASTA record ids), e.g. [chr22]")


def seq_lens(cfg: Config) -> list[int]:
    """Context lengths of the run: data.seq_lens if given, else [data.seq_len]."""
    return [int(x) for x in (cfg["data"].get("seq_lens") or [cfg["data"]["seq_len"]])]


def run_dir(cfg: Config, store: TokenStore, seq_len: int) -> Path:
    return runs.run_dir(cfg, store.source.get("kind", "data"), cfg["model"]["size"], f"L{seq_len}")


def build_model(cfg: Config, n_labels: int, device: str | None = None) -> torch.nn.Module:
    """The classifier of ``cfg["model"]`` (a named size and options), or, with ``init_from``, of the
    pretrained LM there (its backbone weights too unless ``init_weights=false``). ``device="meta"`` only
    checks the configuration."""
    if cfg.get("init_from"):
        head = {k: cfg["model"][k] for k in ("pooling", "classifier_norm") if k in cfg["model"]}
        return runs.classifier_from_lm(cfg["init_from"], n_labels, bool(cfg["init_weights"]), **head)
    return runs.build_model(cfg["model"], "classifier", device, vocab_size=len(VOCAB), num_labels=n_labels)


# --- data ---------------------------------------------------------------------------------------------
def prepare(cfg: Config) -> TokenStore:
    """Prepare (or reuse) the great-apes store chosen by ``data.source``. Needs Biopython only when it
    has to parse FASTA/MAF; an already prepared store (``data.store``) is opened with numpy alone."""
    check_data_source(cfg)
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
    return read_split_bed(bed) if bed else split_intervals(store, by="store")


def n_policy(cfg: Config) -> dict[str, Any]:
    """Window options that keep assembly gaps from being a cue: windows with more than
    ``data.max_n_fraction`` N are left out, the remaining N become random bases (``data.mask_n``)."""
    d = cfg["data"]
    frac = d.get("max_n_fraction")
    return {"max_n_fraction": None if frac is None else float(frac), "mask_n": bool(d.get("mask_n", True))}


class BothStrands(torch.nn.Module):
    """A classifier evaluated on both strands: logits = (f(x) + f(reverse_complement(x))) / 2 (test-time
    reverse-complement averaging, as HyenaDNA / Caduceus evaluate; exact post-hoc conjoining for models that
    cannot be made RC-equivariant, such as the k-mer and Wide & Deep heads). (batch, L) ids -> (batch, K)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.model(input_ids).float() + self.model(reverse_complement(input_ids)).float())


def _classify(cfg: Config, model: torch.nn.Module, windows: TiledWindows, n_labels: int, device: torch.device,
              precision: str, split: str) -> tuple[np.ndarray, float, np.ndarray]:
    """-> (confusion matrix (n_labels, n_labels), mean cross-entropy, (n,) 0/1 hits in window order) over every
    window; a progress bar labelled ``split`` when ``train.progress``."""
    batch = max(1, int(cfg["eval"]["tokens_per_batch"]) // windows.length)
    if cfg["eval"].get("rc_average", False):  # strand is arbitrary: average over both strands of each window
        model, batch = BothStrands(model), max(1, batch // 2)
    label = f"{split}: {len(windows):,} windows" if cfg["train"].get("progress", True) else None
    s = eval_loop(model, windows.batches(batch), classification_counts(n_labels, len(windows)), device, precision,
                  progress=label, total=-(-len(windows) // batch))
    if not s:
        return np.zeros((n_labels, n_labels), dtype=np.int64), 0.0, np.zeros(0, dtype=np.int64)
    return s["confusion"].cpu().numpy(), float(s["loss"]) / len(windows), s["hits"].cpu().numpy()


def window_clusters(store: TokenStore, windows: TiledWindows) -> list[str]:
    """The correlated group of each window, for the accuracy's interval: the homologous region its record
    holds (the simulator's and the MAF source's records are regions, one per species), else the record."""
    region = {r["name"]: r.get("region", r["name"]) for r in store.records}
    seqs = (windows.coords(i).seq for i in range(len(windows)))
    return [str(region.get(seq, seq)) for seq in seqs]


def _baselines(cfg: Config, store: TokenStore, splits: dict[str, list[Interval]], test: TiledWindows,
               seq_len: int) -> dict[int, np.ndarray]:
    """{k: (n_test,) predictions} of k-mer logistic regressions (k in ``eval.baseline_ks``, N counted) fitted
    on random train windows (same split and N policy), on the same test windows (same order) as the network."""
    ev = cfg["eval"]
    n_tokens = ev.get("baseline_train_tokens")
    if n_tokens is None:  # the same number of training tokens as the network saw
        n_tokens = int(cfg["train"]["max_steps"]) * runs.batch_size(cfg, seq_len) * seq_len
    if int(n_tokens) <= 0:
        return {}
    n = max(int(ev.get("baseline_min_windows", 256)), int(n_tokens) // seq_len)
    n = min(n, int(ev.get("baseline_max_windows") or n))
    x, y = RandomWindows(store, splits["train"], seq_len, seed=int(cfg["seed"]) + 1, balance_labels=True,
                         **n_policy(cfg)).batch(0, n)
    tx, ty = zip(*[(a.numpy(), b.numpy()) for a, b in test.batches(256)])
    ks = [int(k) for k in ev.get("baseline_ks", (3, 4, 5, 6))]
    return kmer_baseline_predictions(x.numpy(), y.numpy(), np.concatenate(tx), np.concatenate(ty), ks,
                                     progress=bool(cfg["train"].get("progress", True)))


# --- steps -----------------------------------------------------------------------------------------
def train_batches(cfg: Config, store: TokenStore, splits: dict[str, list[Interval]], seq_len: int):
    """The training run's ``batch_fn(step, length, batch_size) -> (ids, labels)``: random windows of the train
    split (seeded, balanced labels, N policy) at any length of the sequence-length warmup, strands flipped
    when ``data.rc_augment``; a pure function of its arguments (exact resume)."""
    seed = int(cfg["seed"])
    base = RandomWindows(store, splits["train"], seq_len, seed=seed, balance_labels=True, **n_policy(cfg))
    by_len: dict[int, RandomWindows] = {seq_len: base}
    rc = bool(cfg["data"]["rc_augment"])

    def batch_fn(step: int, length: int, batch_size: int):
        if length not in by_len:
            by_len[length] = base.with_length(length)
        x, y = by_len[length].batch(step, batch_size)
        if rc:  # strand is arbitrary in DNA; the flip pattern is a function of the step (exact resume)
            x = rc_augment(x, 0.5, torch.Generator().manual_seed(seed * 1_000_003 + step))
        return x, y

    return batch_fn


def train(cfg: Config, seq_len: int | None = None, resume: bool = False, store: TokenStore | None = None) -> Path:
    """Train a classifier on the train split; validate on val windows. Returns the run directory."""
    store = store or prepare(cfg)
    seq_len = seq_len or seq_lens(cfg)[0]
    splits = load_splits(cfg, store)
    seed, n_labels = int(cfg["seed"]), len(store.label_names)
    tcfg = runs.train_config(cfg, seq_len)
    batch_fn = train_batches(cfg, store, splits, seq_len)
    val = TiledWindows(store, splits["val"], seq_len, max_per_label=int(cfg["eval"]["val_windows_per_class"]),
                       seed=seed, **n_policy(cfg))
    device = resolve_device(tcfg.device)

    def eval_fn(model: torch.nn.Module, step: int) -> dict[str, float]:
        cm, loss, _ = _classify(cfg, model, val, n_labels, device, tcfg.precision, "validate")
        return {"acc": float(np.trace(cm) / cm.sum()), "loss": loss}

    torch.manual_seed(seed)
    model = build_model(cfg, n_labels)
    wide = getattr(model, "wide", None)
    if wide is not None and wide.standardize == "fit":  # a resumed run then loads the checkpoint's statistics
        # its own draw of training windows (seed + 2: neither the training batches nor the baselines')
        fit = RandomWindows(store, splits["train"], seq_len, seed=seed + 2, balance_labels=True, **n_policy(cfg))
        wide.fit_standardizer(fit.batch(0, int(cfg["data"].get("wide_fit_windows", 512)))[0])
    out = run_dir(cfg, store, seq_len)
    write_bed([iv for name in ("train", "val", "test") for iv in splits[name]], out / "splits.bed")
    print(f"training {cfg['model']['size']} ({runs.n_params(model):,} params) on "
          f"{seq_len:,}-base windows, {tcfg.max_steps} steps x {tcfg.batch_size} -> {out}")
    res = train_loop(model, classification_loss, batch_fn, tcfg, out, eval_fn=eval_fn, resume=resume,
                     extra_state={"labels": store.label_names, "store": str(store.path), "seq_len": seq_len})
    if res.steps_run or not (out / "train_summary.json").is_file():  # a finished run resumed: keep its summary
        write_json({**res.summary(), "device": str(device), **res.metrics}, out / "train_summary.json")
    return out


def evaluate(cfg: Config, seq_len: int | None = None, store: TokenStore | None = None) -> dict[str, Any]:
    """Evaluate the latest checkpoint on held-out test regions; writes metrics.json, the sklearn report
    and the row-normalised confusion matrix into the run directory. Returns the metrics."""
    store = store or prepare(cfg)
    seq_len = seq_len or seq_lens(cfg)[0]
    out = run_dir(cfg, store, seq_len)
    ckpt = runs.require_checkpoint(out, "apes")
    tcfg = runs.train_config(cfg, seq_len)
    device = resolve_device(tcfg.device)
    model = runs.load_model(ckpt).to(device)
    splits = load_splits(cfg, store)
    test = TiledWindows(store, splits["test"], seq_len, max_per_label=int(cfg["eval"]["test_windows_per_class"]),
                        seed=int(cfg["seed"]), **n_policy(cfg))
    labels = store.label_names
    t0 = time.perf_counter()
    cm, loss, hits = _classify(cfg, model, test, len(labels), device, tcfg.precision, "test")
    dt = time.perf_counter() - t0
    y, p = confusion_pairs(cm)
    m = classification_metrics(y, p, labels)
    summary_path = out / "train_summary.json"
    train_summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    # windows of one homologous region (one per species) are correlated: resample regions, not windows
    clusters = window_clusters(store, test)
    m["accuracy_ci95"] = cluster_accuracy_ci(hits, clusters)
    n_groups = len(set(clusters))
    m["accuracy_ci95_method"] = (f"cluster bootstrap over {n_groups} groups of correlated test windows (homologous "
                                 f"regions, else records; scipy.stats.bootstrap, percentile)" if n_groups >= 5 else
                                 f"Wilson over windows (only {n_groups} groups of correlated windows, too few to "
                                 f"resample: too narrow if the held-out regions differ)")
    base_hits = {k: (pred == test.labels).astype(np.int64)
                 for k, pred in _baselines(cfg, store, splits, test, seq_len).items()}
    m["kmer_baselines"] = {str(k): float(h.mean()) for k, h in base_hits.items()}
    best_k = max(m["kmer_baselines"], key=m["kmer_baselines"].get) if m["kmer_baselines"] else None
    m["best_kmer_baseline"] = None if best_k is None else {
        "k": int(best_k), "accuracy": m["kmer_baselines"][best_k],
        "accuracy_ci95": cluster_accuracy_ci(base_hits[int(best_k)], clusters)}
    m["kmer_baseline_accuracy"] = None if best_k is None else m["kmer_baselines"][best_k]
    m.update(run_dir=str(out), seq_len=seq_len, test_loss=loss, eval_tokens_per_s=len(y) * seq_len / dt,
             checkpoint=str(ckpt), data=describe(store), synthetic=store.synthetic, source=store.source.get("kind"),
             n_policy=n_policy(cfg), test_windows_left_out_for_n=test.n_left_out,
             model=cfg["model"], train=train_summary, device=str(device),
             negative_control=store.source.get("kind") == "maf", rc_average=bool(cfg["eval"].get("rc_average")))
    syn = " [SIMULATED data]" if store.synthetic else (" [NEGATIVE CONTROL: expected at chance]"
                                                       if m["negative_control"] else "")
    title = (f"great apes, {seq_len:,}-base windows, test acc {m['accuracy']:.3f} "
             f"(chance {m['chance_uniform']:.2f}){syn}")
    write_classification_report(out, y, p, labels, m, title)
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
    if m["negative_control"]:
        print("NEGATIVE CONTROL: this human-projected, one-to-one orthologous alignment carries no species signal a "
              "window classifier can use (docs/apes.md); the expected accuracy is chance, and an interval that "
              "excludes chance points at a leak (assembly gaps, alignment artefacts), not at biology")
    if n_groups < 5:
        print(f"note: the test windows come from {n_groups} groups of correlated windows (held-out homologous "
              f"regions); the intervals treat windows as independent and are too narrow if regions differ "
              f"(more, smaller regions: data.region_size)")
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
            "kmer_baselines", "n_windows", "synthetic", "source", "run_dir")
    summary = [{k: r[k] for k in keys} | {k: r["train"].get(k) for k in ("tokens_per_s", "peak_memory_gib",
                                                                           "peak_rss_gib")} for r in results]
    write_json({"note": "the latest `mambaseq apes run` in this out_dir (each run rewrites this file); every run's "
                        "full results stay in its run_dir (metrics.json, train_summary.json)",
                "results": summary, "wall_s": time.perf_counter() - t0}, out / "summary.json")
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
def _train_each_length(cfg: Config, args) -> None:
    store = prepare(cfg)
    for L in seq_lens(cfg):
        train(cfg, L, resume=args.resume, store=store)


def _evaluate_each_length(cfg: Config, args) -> None:
    store = prepare(cfg)
    for L in seq_lens(cfg):
        evaluate(cfg, L, store=store)


COMMAND = runs.Command("apes", "great-ape species classification", __doc__, load_config, {
    "prepare": lambda cfg, args: prepare(cfg),
    "train": _train_each_length,
    "evaluate": _evaluate_each_length,
    "run": lambda cfg, args: run_all(cfg, resume=args.resume),
})
main = COMMAND.main

if __name__ == "__main__":
    raise SystemExit(main())
