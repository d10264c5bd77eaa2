"""Pretraining measurements and outputs: bits per base by context position, k-mer spectra, FASTA.

    pos = lm_eval(model, windows, ...)            # bits/base overall and per input position
    rows = position_buckets(pos["bits_sum"], pos["count"])     # log2 buckets of context length
    write_position_curve(rows, run_dir / "eval", title)        # loss_vs_position.csv + .png
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mambaseq.fileio import atomic_write_text
from mambaseq.training import autocast_context
from mambaseq.training.mlm import IGNORE_INDEX, mask_tokens

LN2 = math.log(2.0)


# --- next-token evaluation ----------------------------------------------------------------------------
@torch.no_grad()
def lm_eval(model: torch.nn.Module, windows: Iterable[torch.Tensor], device: torch.device,
            autocast: Any, seq_len: int) -> dict[str, Any]:
    """Next-token loss over batches of windows (b, seq_len + 1).

    Returns {"bits_per_base", "n_tokens", "bits_sum" (seq_len,) float64: summed bits of the prediction made
    after seeing positions 0..p, "count" (seq_len,) number of windows}. Sums (not means) so that
    data-parallel ranks can all-reduce them.
    """
    bits_sum = torch.zeros(seq_len, dtype=torch.float64, device=device)
    count = torch.zeros(seq_len, dtype=torch.float64, device=device)
    for x in windows:
        x = x.to(device)
        with autocast:
            logits = model(x[:, :-1]).float()  # (b, L, V)
        nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")  # (b, L) nats
        bits_sum += nll.double().sum(0) / LN2
        count += x.shape[0]
    return {"bits_sum": bits_sum, "count": count}


@torch.no_grad()
def mlm_eval(model: torch.nn.Module, windows: Iterable[torch.Tensor], device: torch.device, autocast: Any,
             seq_len: int, seed: int, mlm_probability: float = 0.15) -> dict[str, Any]:
    """Masked-LM loss over batches of windows (b, >= seq_len): the first ``seq_len`` tokens, masked as in
    training (``mask_tokens``) with masks seeded by (seed, batch index), so every evaluation sees the same.

    Returns {"bits_sum" (seq_len,) float64: summed bits of the masked predictions at each position,
    "count" (seq_len,): how many positions were masked there}; ``reduce_eval`` turns them into bits/base."""
    bits_sum = torch.zeros(seq_len, dtype=torch.float64, device=device)
    count = torch.zeros(seq_len, dtype=torch.float64, device=device)
    for i, x in enumerate(windows):
        inputs, labels = mask_tokens(x[:, :seq_len], torch.Generator().manual_seed(seed * 1_000_003 + i),
                                     mlm_probability)
        labels = labels.to(device)
        with autocast:
            logits = model(inputs.to(device)).float()  # (b, L, V)
        nll = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=IGNORE_INDEX)
        bits_sum += nll.double().sum(0) / LN2
        count += (labels != IGNORE_INDEX).sum(0)
    return {"bits_sum": bits_sum, "count": count}


def is_mlm(cfg: dict[str, Any]) -> bool:
    """The run's ``objective``: clm (next-token LM, False) | mlm (masked LM, True); ValueError otherwise."""
    if cfg.get("objective", "clm") not in ("clm", "mlm"):
        raise ValueError(f"objective must be clm (next-token) or mlm (masked LM), got {cfg['objective']!r}")
    return cfg.get("objective") == "mlm"


def eval_bits(cfg: dict[str, Any], model: torch.nn.Module, windows: Iterable[torch.Tensor], device: torch.device,
              precision: str, seq_len: int) -> dict[str, Any]:
    """``lm_eval`` (objective clm) or ``mlm_eval`` (objective mlm) of a pretraining run's ``cfg``."""
    ac = autocast_context(device, precision)
    if is_mlm(cfg):
        return mlm_eval(model, windows, device, ac, seq_len, int(cfg["seed"]), float(cfg["mlm_probability"]))
    return lm_eval(model, windows, device, ac, seq_len)


def reduce_eval(stats: dict[str, torch.Tensor]) -> dict[str, Any]:
    """All-reduce sums across ranks (when distributed) -> bits_per_base, per-position arrays on CPU."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for t in stats.values():
            torch.distributed.all_reduce(t)
    bits, cnt = stats["bits_sum"].cpu().numpy(), stats["count"].cpu().numpy()
    n = float(cnt.sum())
    return {"bits_per_base": float(bits.sum() / max(n, 1.0)), "n_tokens": int(n), "bits_sum": bits, "count": cnt}


def position_buckets(bits_sum: np.ndarray, count: np.ndarray) -> list[dict[str, float]]:
    """Log2 buckets of context length c = position + 1: [1, 1], [2, 3], [4, 7], ... -> mean bits/base in
    each; a short trailing bucket (e.g. the single c = L of a power-of-two L) joins the one before it."""
    L = len(bits_sum)
    edges = [1]
    while edges[-1] * 2 <= L:
        edges.append(edges[-1] * 2)
    edges.append(L + 1)
    if len(edges) > 3 and edges[-1] - edges[-2] < (edges[-2] - edges[-3]) / 2:
        del edges[-2]
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        b, c = bits_sum[lo - 1: hi - 1].sum(), count[lo - 1: hi - 1].sum()
        rows.append({"context_from": lo, "context_to": hi - 1, "n_predictions": int(c),
                     "bits_per_base": float(b / c) if c else float("nan")})
    return rows


def write_position_curve(rows: Sequence[dict[str, float]], out_dir: str | Path, title: str,
                         name: str = "loss_vs_position") -> tuple[Path, Path]:
    """CSV (one row per bucket) + PNG (bits/base vs context length, log2 x axis)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{name}.csv"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.")
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, csv_path)
    png = plot_curves({"": rows}, out_dir / f"{name}.png", title)
    return csv_path, png


def plot_curves(curves: dict[str, Sequence[dict[str, float]]], path: str | Path, title: str) -> Path:
    """One line per curve (label -> bucket rows) of bits/base against context length (log2 x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, rows in curves.items():
        x = [math.sqrt(r["context_from"] * max(r["context_to"], 1)) for r in rows]
        ax.plot(x, [r["bits_per_base"] for r in rows], marker="o", label=label or None)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length seen (bases, log2 buckets)")
    ax.set_ylabel("next-base loss (bits/base)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if any(curves):
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# --- sequence statistics ---------------------------------------------------------------------------------
def kmer_spectrum(seqs: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Normalised counts (4^k,) of ACGT k-mers over a list of (L,) token arrays (k-mers with N skipped)."""
    counts = np.zeros(4**k, dtype=np.float64)
    weights = 4 ** np.arange(k - 1, -1, -1, dtype=np.int64)
    for s in seqs:
        s = np.asarray(s, dtype=np.int64)
        if s.size < k:
            continue
        win = np.lib.stride_tricks.sliding_window_view(s, k)
        win = win[(win < 4).all(1)]
        counts += np.bincount(win @ weights, minlength=4**k)
    total = counts.sum()
    return counts / total if total else counts


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = same spectrum, 1 = disjoint)."""
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def gc_content(seqs: Sequence[np.ndarray]) -> float:
    """Fraction of C+G among ACGT bases."""
    acgt = np.concatenate([np.asarray(s) for s in seqs])
    acgt = acgt[acgt < 4]
    return float(np.isin(acgt, (1, 2)).mean()) if acgt.size else float("nan")


def compare_to_real(groups: dict[str, Sequence[np.ndarray]], real: Sequence[np.ndarray],
                    ks: Sequence[int] = (1, 2, 3, 4, 6)) -> dict[str, dict[str, float]]:
    """GC content and k-mer Jensen-Shannon divergence of each group of sequences to held-out ``real`` DNA."""
    ref = {k: kmer_spectrum(real, k) for k in ks}
    out = {"real_reference": {"gc": gc_content(real), "bases": int(sum(len(s) for s in real))}}
    for name, seqs in groups.items():
        row = {"gc": gc_content(seqs), "bases": int(sum(len(s) for s in seqs))}
        row.update({f"js_k{k}": js_divergence(kmer_spectrum(seqs, k), ref[k]) for k in ks})
        out[name] = row
    return out


def write_fasta(records: Sequence[tuple[str, str]], path: str | Path, width: int = 80) -> Path:
    """[(header without '>', sequence)] -> FASTA, written atomically."""
    lines = []
    for header, seq in records:
        lines.append(">" + header)
        lines.extend(seq[i: i + width] for i in range(0, len(seq), width))
    return atomic_write_text(path, "\n".join(lines) + "\n")
