"""Files a run leaves for people to read: classification reports, confusion matrices, accuracy and loss
curves, FASTA. Plots are matplotlib (headless); every file is written atomically (``mambaseq.fileio``)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mambaseq.fileio import atomic_path, atomic_write_text, write_json


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    pyplot().close(fig)
    return Path(path)


# --- classification ---------------------------------------------------------------------------------------
def write_classification_report(out_dir: str | Path, y_true: np.ndarray, y_pred: np.ndarray,
                                labels: Sequence[str], metrics: dict[str, Any], title: str) -> None:
    """metrics.json, classification_report.txt and confusion_matrix.png (row-normalised) in ``out_dir``."""
    from sklearn.metrics import classification_report

    out = Path(out_dir)
    write_json(metrics, out / "metrics.json")
    rep = classification_report(y_true, y_pred, labels=list(range(len(labels))), target_names=list(labels),
                                digits=3, zero_division=0)
    atomic_write_text(out / "classification_report.txt", f"{title}\n\n{rep}")
    plot_confusion(np.array(metrics["confusion_matrix"]), labels, out / "confusion_matrix.png", title)


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str) -> None:
    """Row-normalised confusion matrix (each true class sums to 1) with the values printed."""
    plt = pyplot()
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.3 * len(labels) + 2, 1.1 * len(labels) + 1.5))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path)


def plot_accuracy_vs_length(results: Sequence[dict[str, Any]], path: str | Path, title: str) -> None:
    """Test accuracy (and chance) against context length, log2 x axis."""
    plt = pyplot()
    rs = sorted(results, key=lambda r: r["seq_len"])
    xs = [r["seq_len"] for r in rs]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(xs, [r["accuracy"] for r in rs], "o-", label="test accuracy")
    if all(r.get("kmer_baseline_accuracy") is not None for r in rs):
        ax.plot(xs, [r["kmer_baseline_accuracy"] for r in rs], "s:", label="best k-mer logistic regression (k=3..6)")
    ax.plot(xs, [r["chance_uniform"] for r in rs], "--", color="gray", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (bases)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


# --- language models ------------------------------------------------------------------------------------
def write_position_curve(rows: Sequence[dict[str, float]], out_dir: str | Path, title: str,
                         name: str = "loss_vs_position") -> tuple[Path, Path]:
    """CSV (one row per bucket of ``mambaseq.training.evaluation.position_buckets``) + PNG (bits/base vs
    context length, log2 x axis)."""
    out_dir = Path(out_dir)
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    csv_path = atomic_write_text(out_dir / f"{name}.csv", text.getvalue(), newline="")
    png = plot_curves({"": rows}, out_dir / f"{name}.png", title)
    return csv_path, png


def plot_curves(curves: dict[str, Sequence[dict[str, float]]], path: str | Path, title: str) -> Path:
    """One line per curve (label -> bucket rows) of bits/base against context length (log2 x)."""
    plt = pyplot()
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
    return save_figure(fig, path)


def write_fasta(records: Sequence[tuple[str, str]], path: str | Path, width: int = 80) -> Path:
    """[(header without '>', sequence)] -> FASTA, written atomically."""
    lines = []
    for header, seq in records:
        lines.append(">" + header)
        lines.extend(seq[i: i + width] for i in range(0, len(seq), width))
    return atomic_write_text(path, "\n".join(lines) + "\n")
