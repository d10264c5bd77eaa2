"""Learning on REAL genomes of four organisms (issue 10's target): does the README main job's classifier
match the k-mer logistic regressions within the main job's budget (700 steps x 4 windows)?

    python bench/bench_learning_real.py                         # 4,096 bases: main job, then without the wide head
    python bench/bench_learning_real.py --lengths 1024 4096     # also 1,024 bases
    python bench/bench_learning_real.py --variants main         # only the main job's recipe
    python bench/bench_learning_real.py -- train.max_steps=100  # extra Hydra overrides (after experiment=apes)

Data (offline, from Debian packages; every base is real DNA, nothing simulated):

* human (Homo sapiens): chr20 of GRCh37 (``vt-examples``; 63.0 Mb, one FASTA record, 5.6% N);
* Ustilago maydis (a basidiomycete fungus): its assembly in ``maffilter-examples`` (19.7 Mb, 23 chromosomes
  and contigs);
* Zymoseptoria ardabiliae (an ascomycete, Dothideomycetes) and
* Septoria passerinii (an ascomycete of a neighbouring genus): the ungapped rows of the
  ``Zardabiliae_111`` and ``Spasserinii_P63`` genomes in ``maffilter-examples``' TBA alignment of Zymoseptoria
  species on the Z. tritici IPO323 reference (27.0 and 24.0 Mb: the parts of each genome that align to IPO323).

Why these: four distinct organisms with 20-63 Mb each, so 500-kb held-out regions leave 2.4-10 Mb of test
sequence per organism; the two ascomycetes come out of the same alignment by the same processing (ungapped
rows, concatenated in reference order, upper-cased), so their windows differ by organism only, not by how
they were made (the IPO323 reference rows would be whole-genome and contiguous beside the others' aligned
pieces). Not used: the great apes of ``maffilter-examples``' chr22 alignment (a human-chr20 vs orangutan-chr22
4-mer regression is at chance, 0.50, at 4 kb: a second ape is no separable class), and ``UCSC46ways/`` (it
ships only MafFilter option files; its README says the alignment is not included). Every pair of Dothideomycete
rows of the alignment is hard to tell apart by composition (4-mer logistic regression 0.54-0.61 on pairs at 4
kb), so no fair choice of four organisms from these packages gives a 4-mer regression of 0.95: here it is
~0.79 at 4 kb, human and U. maydis being separated perfectly and the two ascomycetes near chance.

The FASTA genomes are read by ``mambaseq.data_prep.fasta.prepare_fasta``, the alignment by
``mambaseq.data_prep.maf.prepare_maf`` (regions of 500,000 alignment columns, each wholly train, val or test
for both ascomycetes, so homologous DNA never straddles splits); both stores are copied into one
labelled token store (``StoreWriter``). The FASTA organisms are split into 500,000-base regions
(``split_intervals(by="region")``); the split is a BED (``data.split_bed``). Train, validation and test
windows lie in disjoint regions, so no test window overlaps a training window. The N policy is the apes
pipeline's (``data.max_n_fraction``, ``data.mask_n``).

Each variant is the apes pipeline itself (``mambaseq apes run experiment=apes data.store=... data.split_bed=...``,
in this process): the README main job's model (``configs/model/apes_cpu.yaml``) and recipe (batch 4, lr 3e-3,
30 warm-up steps, 700 steps), evaluated on held-out test windows. The k-mer logistic regressions (k = 3..6,
``mambaseq.data.kmers``) are fitted on exactly the 2,800 windows the network trained on (before its random
reverse-complementing) and scored on the same test windows; the pipeline's own baselines (fitted on as many
other random training windows) are kept in the JSON too. Writes ``bench/results/learning_real.json``; prints a
table and the early training loss (does it leave ln 4 quickly?).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mambaseq import runs
from mambaseq.data import (Interval, RandomWindows, StoreWriter, TiledWindows, TokenStore, describe, fingerprint,
                           read_split_bed, split_intervals, store_is_current, write_bed)
from mambaseq.data.kmers import kmer_baselines
from mambaseq.data_prep.fasta import prepare_fasta
from mambaseq.data_prep.maf import prepare_maf
from mambaseq.data_prep.sources import VT_CHR20
from mambaseq.fileio import read_json, write_json
from mambaseq.training.evaluation import accuracy_ci

RESULTS = Path(__file__).resolve().parent / "results"
EXAMPLES = Path("/usr/share/doc/maffilter/examples")
UMAYDIS = EXAMPLES / "Umaydis" / "Umaydis.fasta.gz"
ZYMO_MAF = EXAMPLES / "Ztritici" / "tba_refIPO323.maf.gz"
# label -> genome of the Zymoseptoria alignment (the row-name prefix)
MAF_SPECIES = {"Z_ardabiliae": "Zardabiliae_111", "S_passerinii": "Spasserinii_P63"}
FASTA_ORGANISMS = {"human": VT_CHR20, "U_maydis": UMAYDIS}
REGION_SIZE = 500_000          # bases (FASTA organisms) or alignment columns (the MAF) per split region
FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_SEED = 0
# the two variants: the README main job, and the same recipe without the wide 8-mer head
VARIANTS = {"main": [], "no_wide_head": ["model.wide_kmer_size=0"]}


# --- data ---------------------------------------------------------------------------------------------
def build_store(root: Path, maf_species: dict[str, str] | None = None) -> tuple[Path, Path, dict[str, Any]]:
    """Prepare (or reuse) the four-organism store under ``root`` -> (store, split BED, per-organism sizes)."""
    maf_species = dict(maf_species or MAF_SPECIES)
    missing = [str(p) for p in (*FASTA_ORGANISMS.values(), ZYMO_MAF) if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"missing {missing}: `apt-get install vt-examples maffilter-examples`")
    fa = prepare_fasta(FASTA_ORGANISMS, root / "fasta", source={"synthetic": False}, progress=False)
    maf = prepare_maf(ZYMO_MAF, root / "maf", region_size=REGION_SIZE, fractions=FRACTIONS, seed=SPLIT_SEED,
                      species=list(maf_species.values()), progress=False)
    labels = [*FASTA_ORGANISMS, *maf_species]
    out = root / "organisms"
    fp = fingerprint("learning_real", {"fasta": fa.index["fingerprint"], "maf": maf.index["fingerprint"],
                                       "labels": labels, "maf_species": maf_species})
    if not store_is_current(out, fp):
        src = {"kind": "real4", "synthetic": False, "files": [*map(str, FASTA_ORGANISMS.values()), str(ZYMO_MAF)],
               "description": f"REAL genomes of four organisms {labels}"}
        label_of = {sp: lab for lab, sp in maf_species.items()}
        with StoreWriter(out, fp, source=src, synthetic=False, labels=labels) as w:
            for rec in fa.records:
                w.add(rec["name"], np.asarray(fa.get(rec["name"])), label=rec["label"], origin="fasta",
                      source_file=rec["source_file"])
            for rec in maf.records:  # one sequence per (species, alignment region), with the region's split
                lab = label_of[rec["label"]]
                w.add(f"{lab}/{rec['name']}", np.asarray(maf.get(rec["name"])), label=lab, split=rec["split"],
                      region=rec["region"], origin="maf", source_file=rec["source_file"])
    store = TokenStore(out)
    # FASTA organisms: 500-kb regions assigned at random; the ascomycetes: the alignment regions' splits
    by_region = split_intervals(store, by="region", fractions=FRACTIONS, region_size=REGION_SIZE, seed=SPLIT_SEED)
    origin = {r["name"]: r["origin"] for r in store.records}
    intervals = [iv for s in ("train", "val", "test") for iv in by_region[s] if origin[iv.seq] == "fasta"]
    intervals += [Interval(r["name"], 0, r["length"], r["split"]) for r in store.records if r["origin"] == "maf"]
    bed = root / "splits.bed"
    write_bed(sorted(intervals), bed)
    return out, bed, data_sizes(store, read_split_bed(bed))


def data_sizes(store: TokenStore, splits: dict[str, list[Interval]]) -> dict[str, dict[str, Any]]:
    """{organism: {split: bases, "n_fraction": share of N}} of the store under ``splits``."""
    label = {r["name"]: r["label"] for r in store.records}
    out: dict[str, dict[str, Any]] = {lab: {"train": 0, "val": 0, "test": 0, "n_bases": 0, "bases": 0}
                                      for lab in store.label_names}
    for s, ivs in splits.items():
        for iv in ivs:
            out[label[iv.seq]][s] += iv.length
    for r in store.records:
        x = store.get(r["name"])
        out[r["label"]]["bases"] += int(x.size)
        out[r["label"]]["n_bases"] += int(np.count_nonzero(x == 4))
    for row in out.values():
        row["n_fraction"] = row.pop("n_bases") / max(row["bases"], 1)
    return out


# --- one run of the pipeline, and the baselines on the very windows it trained on -----------------------
def pipeline_config(store: Path, bed: Path, seq_len: int, out_dir: Path, overrides: Sequence[str]) -> runs.Config:
    """The README main job's config (experiment=apes) on the four-organism store at ``seq_len``."""
    return runs.load_pipeline("apes").load_config([
        "experiment=apes", f"data.store={store}", f"data.split_bed={bed}", f"data.seq_len={seq_len}",
        "data.seq_lens=null", f"out_dir={out_dir}", "train.log_every=5", "train.progress=false", *overrides])


def n_policy(cfg: runs.Config) -> dict[str, Any]:
    """The apes pipeline's N policy (``data.max_n_fraction``, ``data.mask_n``)."""
    return runs.load_pipeline("apes").n_policy(cfg)


def same_window_baselines(cfg: runs.Config, seq_len: int) -> dict[str, Any]:
    """k-mer logistic regressions (k = eval.baseline_ks) fitted on exactly the windows the network trains
    on (train batches 0 .. max_steps-1, before reverse-complementing) and scored on its test windows."""
    store = TokenStore(cfg["data"]["store"])
    splits = read_split_bed(cfg["data"]["split_bed"])
    steps, batch = int(cfg["train"]["max_steps"]), runs.batch_size(cfg, seq_len)
    train = RandomWindows(store, splits["train"], seq_len, seed=int(cfg["seed"]), balance_labels=True,
                          **n_policy(cfg))
    xs, ys = zip(*[train.batch(step, batch) for step in range(steps)])
    test = TiledWindows(store, splits["test"], seq_len, max_per_label=int(cfg["eval"]["test_windows_per_class"]),
                        seed=int(cfg["seed"]), **n_policy(cfg))
    tx, ty = zip(*[(a.numpy(), b.numpy()) for a, b in test.batches(256)])
    tx, ty = np.concatenate(tx), np.concatenate(ty)
    t0 = time.perf_counter()
    ks = [int(k) for k in cfg["eval"].get("baseline_ks", (3, 4, 5, 6))]
    acc = kmer_baselines(torch.cat(xs).numpy(), torch.cat(ys).numpy(), tx, ty, ks)
    best = max(acc, key=acc.get)
    n = len(ty)
    return {"train_windows": steps * batch, "test_windows": n, "fit_s": time.perf_counter() - t0,
            "accuracy": {str(k): v for k, v in acc.items()}, "best_k": best, "best": acc[best],
            "best_ci95": accuracy_ci(round(acc[best] * n), n),
            "test_windows_per_label": np.bincount(ty, minlength=len(store.label_names)).tolist()}


def loss_curve(run: Path) -> dict[int, float]:
    """{step: mean training loss of the last log_every steps} from the run's metrics.csv."""
    with open(run / "metrics.csv", newline="") as f:
        return {int(r["step"]): float(r["value"]) for r in csv.DictReader(f) if r["name"] == "train/loss"}


def left_chance(curve: dict[int, float], n_labels: int, margin: float = 0.1) -> int | None:
    """First logged step whose loss is ``margin`` below ln(n_labels) (the loss of a uniform guess)."""
    return next((s for s, v in sorted(curve.items()) if v < math.log(n_labels) - margin), None)


def run_variant(name: str, cfg: runs.Config, seq_len: int, baselines: dict[str, Any]) -> dict[str, Any]:
    apes = runs.load_pipeline("apes")
    t0 = time.perf_counter()
    (m,) = apes.run_all(cfg)
    wall = time.perf_counter() - t0
    run = Path(m["checkpoint"]).parent.parent
    curve = loss_curve(run)
    n_labels = len(m["labels"])
    lo, hi = m["accuracy_ci95"]
    return {"variant": name, "seq_len": seq_len, "accuracy": m["accuracy"], "ci_low": lo, "ci_high": hi,
            "n_test_windows": m["n_windows"], "balanced_accuracy": m["balanced_accuracy"],
            "per_class_recall": m["per_class_recall"], "confusion_matrix": m["confusion_matrix"],
            "labels": m["labels"], "chance": m["chance_uniform"],
            "kmer_same_windows": baselines, "best_kmer": baselines["best"], "best_kmer_k": baselines["best_k"],
            "kmer4": baselines["accuracy"].get("4"), "margin_vs_best_kmer": m["accuracy"] - baselines["best"],
            "kmer_pipeline": {"accuracy": m["kmer_baselines"], "note": "the pipeline's own baselines: as many "
                              "random training windows, another seed"},
            "steps": m["train"].get("step"), "batch_size": runs.batch_size(cfg, seq_len),
            "train_wall_s": m["train"].get("wall_s"), "train_tokens_per_s": m["train"].get("tokens_per_s"),
            "wall_s": wall, "model": m["model"], "train_recipe": {k: cfg["train"][k] for k in (
                "max_steps", "batch_size", "lr", "warmup_steps", "min_lr_ratio", "weight_decay", "grad_clip")},
            "loss_curve": {str(s): v for s, v in sorted(curve.items())},
            "ln_n_labels": math.log(n_labels), "first_step_below_ln_k_minus_0.1": left_chance(curve, n_labels),
            "run_dir": str(run)}


def early_losses(row: dict[str, Any], steps: Sequence[int] = (5, 10, 20, 30, 50, 100, 200, 400, 700)) -> str:
    c = {int(s): v for s, v in row["loss_curve"].items()}
    return "  ".join(f"{s}:{c[s]:.3f}" for s in steps if s in c)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096])
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--data", type=Path, default=Path("data/learning_real"), help="where the stores go")
    ap.add_argument("--work", type=Path, default=Path("runs/learning_real"), help="run directories")
    ap.add_argument("--out", type=Path, default=RESULTS / "learning_real.json")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides (after experiment=apes)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    store, bed, sizes = build_store(args.data)
    print(f"data: {describe(TokenStore(store))}; split BED {bed}")
    for lab, row in sizes.items():
        print(f"  {lab:>13}: {row['bases']:>11,} bases ({row['n_fraction']:.2%} N); train {row['train']:,}, "
              f"val {row['val']:,}, test {row['test']:,}")
    rows = []
    for L in args.lengths:
        base = None
        for v in args.variants:
            cfg = pipeline_config(store, bed, L, args.work / v, [*VARIANTS[v], *args.overrides])
            if base is None:  # the same windows for every variant (same seed, steps and batch)
                base = same_window_baselines(cfg, L)
                print(f"L={L:,}: k-mer logistic regressions on the {base['train_windows']:,} training windows: "
                      f"{base['accuracy']} ({base['fit_s']:.0f} s)", flush=True)
            print(f"L={L:,} {v}: training ...", flush=True)
            rows.append(run_variant(v, cfg, L, base))
            write_json(result(rows, sizes, store, bed, args, t0), args.out)  # partial results survive a stop
    write_json(result(rows, sizes, store, bed, args, t0), args.out)
    print(f"\n{'variant':>13} {'bases':>6} {'accuracy':>8} {'95% CI':>15} {'best k-mer':>10} {'k':>2} {'4-mer':>6} "
          f"{'margin':>7} {'steps':>9} {'train s':>8} {'loss<ln4-0.1':>12}")
    for r in rows:
        print(f"{r['variant']:>13} {r['seq_len']:>6,} {r['accuracy']:>8.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
              f"{r['best_kmer']:>10.3f} {r['best_kmer_k']:>2} {r['kmer4']:>6.3f} {r['margin_vs_best_kmer']:>+7.3f} "
              f"{r['steps']:>4} x {r['batch_size']:<2} {r['train_wall_s']:>8.0f} "
              f"{str(r['first_step_below_ln_k_minus_0.1']):>12}")
    for r in rows:
        print(f"  {r['variant']} L={r['seq_len']:,} per-class recall "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["per_class_recall"].items()))
        print(f"    training loss (mean of 5 steps; ln 4 = {math.log(4):.3f}) at step  {early_losses(r)}")
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    return 0


def result(rows: list[dict[str, Any]], sizes: dict[str, Any], store: Path, bed: Path, args: argparse.Namespace,
           t0: float) -> dict[str, Any]:
    return {
        "rows": rows,
        "data": {"store": str(store), "split_bed": str(bed), "organisms": sizes, "region_size": REGION_SIZE,
                 "fractions": list(FRACTIONS), "maf_species": MAF_SPECIES,
                 "fasta": {k: str(v) for k, v in FASTA_ORGANISMS.items()}, "maf": str(ZYMO_MAF),
                 "synthetic": False},
        "command": "python bench/bench_learning_real.py " + " ".join(
            [f"--lengths {' '.join(map(str, args.lengths))}", f"--variants {' '.join(args.variants)}",
             *args.overrides]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "wall_s": time.perf_counter() - t0,
    }


if __name__ == "__main__":
    raise SystemExit(main())
