"""Evaluation outputs for classification pipelines: metrics.json, sklearn report, confusion-matrix and
accuracy-vs-context-length plots (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mambaseq.fileio import write_json



def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, chance levels, per-class recall and the confusion matrix."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score

    k = len(labels)
    cm = confusion_matrix(y_true, y_pred, labels=list(range(k)))
    counts = np.bincount(y_true, minlength=k)
    return {
        "accuracy": float((y_true == y_pred).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=list(range(k)), average="macro", zero_division=0)),
        "chance_uniform": 1.0 / k,
        "chance_majority": float(counts.max() / counts.sum()),
        "n_windows": int(len(y_true)),
        "per_class_recall": {labels[i]: float(cm[i, i] / max(cm[i].sum(), 1)) for i in range(k)},
        "confusion_matrix": cm.tolist(),
        "labels": list(labels),
    }


def write_report(out_dir: str | Path, y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str],
                 metrics: dict[str, Any], title: str) -> None:
    """metrics.json, classification_report.txt and confusion_matrix.png (row-normalised) in ``out_dir``."""
    from sklearn.metrics import classification_report

    out = Path(out_dir)
    write_json(metrics, out / "metrics.json")
    rep = classification_report(y_true, y_pred, labels=list(range(len(labels))), target_names=list(labels),
                                digits=3, zero_division=0)
    (out / "classification_report.txt").write_text(f"{title}\n\n{rep}")
    plot_confusion(np.array(metrics["confusion_matrix"]), labels, out / "confusion_matrix.png", title)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str) -> None:
    """Row-normalised confusion matrix (each true class sums to 1) with the values printed."""
    plt = _plt()
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_vs_length(results: Sequence[dict[str, Any]], path: str | Path, title: str) -> None:
    """Test accuracy (and chance) against context length, log2 x axis."""
    plt = _plt()
    rs = sorted(results, key=lambda r: r["seq_len"])
    xs = [r["seq_len"] for r in rs]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(xs, [r["accuracy"] for r in rs], "o-", label="test accuracy")
    if all(r.get("kmer_baseline_accuracy") is not None for r in rs):
        ax.plot(xs, [r["kmer_baseline_accuracy"] for r in rs], "s:", label="4-mer logistic regression")
    ax.plot(xs, [r["chance_uniform"] for r in rs], "--", color="gray", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (bases)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def kmer_profiles(x: np.ndarray, k: int = 4) -> np.ndarray:
    """(b, L) token ids -> (b, 4^k) k-mer frequency profiles (k-mers containing N are skipped)."""
    b, L = x.shape
    ids = np.zeros((b, L - k + 1), dtype=np.int64)
    bad = np.zeros((b, L - k + 1), dtype=bool)
    for i in range(k):  # vectorised over rows and positions; k is small
        col = x[:, i : L - k + 1 + i].astype(np.int64)
        ids = ids * 4 + np.minimum(col, 3)
        bad |= col > 3
    ids = ids + (np.arange(b)[:, None] * 4**k)
    counts = np.bincount(ids[~bad], minlength=b * 4**k).reshape(b, 4**k).astype(np.float64)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1)


def kmer_baseline(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 4) -> np.ndarray:
    """Predictions of a k-mer-profile logistic regression: how much species signal plain composition
    carries on the same split (context for the network's accuracy)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(kmer_profiles(train_x, k))
    clf = LogisticRegression(max_iter=1000, C=1.0).fit(scaler.transform(kmer_profiles(train_x, k)), train_y)
    return clf.predict(scaler.transform(kmer_profiles(test_x, k)))
