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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def kmer_profiles(x: np.ndarray, k: int = 4, max_tokens: int = 1 << 24) -> np.ndarray:
    """(b, L) token ids -> (b, 5^k) float32 k-mer frequency profiles over the alphabet A, C, G, T, N (N
    counted as a fifth letter, every other id read as N), computed in row blocks of at most ``max_tokens``."""
    b, L = x.shape
    if L < k:
        raise ValueError(f"kmer_profiles: windows of {L} bases are shorter than k={k}")
    out = np.zeros((b, 5**k), dtype=np.float32)
    rows = max(1, max_tokens // L)
    for r0 in range(0, b, rows):
        xs = np.minimum(np.asarray(x[r0 : r0 + rows]), 4).astype(np.int64)
        n = xs.shape[0]
        ids = np.zeros((n, L - k + 1), dtype=np.int64)
        for i in range(k):  # vectorised over rows and positions; k is small
            ids = ids * 5 + xs[:, i : L - k + 1 + i]
        ids += np.arange(n)[:, None] * 5**k
        out[r0 : r0 + n] = np.bincount(ids.ravel(), minlength=n * 5**k).reshape(n, 5**k) / (L - k + 1)
    return out


def kmer_baseline(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 4) -> np.ndarray:
    """Predictions of a k-mer-profile logistic regression (standardised frequencies; k-mers never seen in
    training dropped): how much species signal plain composition carries on the same split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tr = kmer_profiles(train_x, k)
    seen = tr.any(axis=0)
    scaler = StandardScaler().fit(tr[:, seen])
    clf = LogisticRegression(max_iter=1000, C=1.0).fit(scaler.transform(tr[:, seen]), train_y)
    return clf.predict(scaler.transform(kmer_profiles(test_x, k)[:, seen]))


def kmer_baselines(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   ks: Sequence[int] = (3, 4, 5, 6)) -> dict[int, float]:
    """{k: test accuracy} of ``kmer_baseline`` for each k (the same train and test windows)."""
    return {int(k): float((kmer_baseline(train_x, train_y, test_x, k) == test_y).mean()) for k in ks}


def accuracy_ci(n_correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of an accuracy (scipy.stats.binomtest); (nan, nan) when n == 0."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(int(n_correct), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)
