"""The one evaluation loop, the per-batch scores the pipelines use with it, and what is computed from them.

    stats = eval_loop(model, batches, next_token_bits, device, precision)   # sums over every batch
    stats = reduce_sums(stats)                                             # + over data-parallel ranks
    bits_per_token(stats), position_buckets(stats["bits_sum"], stats["count"])

A score maps ``(model, batch)`` to a dict of tensors of fixed shapes; the loop adds them up over the
batches. Sums, not means, so that data-parallel ranks can all-reduce them and a mean is taken once at the
end. Scores: ``next_token_bits`` (causal LMs: DNA, audio), ``masked_bits`` (masked LMs, on
``masked_batches``), ``classification_counts`` (loss and confusion matrix of a sequence classifier).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .losses import LN2
from .mlm import IGNORE_INDEX, mask_tokens
from .trainer import autocast_context, to_device

Score = Callable[[nn.Module, Any], Mapping[str, Tensor]]


@torch.no_grad()
def eval_loop(model: nn.Module, batches: Iterable[Any], score: Score, device: torch.device,
             precision: str = "auto", progress: str | None = None, total: int | None = None) -> dict[str, Tensor]:
    """Sum ``score(model, batch)`` over ``batches``: the model in eval mode, no gradients, each batch moved
    to ``device``, autocast as in training (``precision``: auto | bf16 | fp32). Returns the sums (tensors
    on ``device``); an empty ``batches`` gives {}. ``progress``: the label of a tqdm bar over the batches
    (``total`` batches, for its ETA); None shows nothing."""
    model.eval()
    totals: dict[str, Tensor] = {}
    for batch in tqdm(batches, desc=progress, total=total, unit="batch", disable=progress is None):
        with autocast_context(device, precision):
            out = score(model, to_device(batch, device))
        for k, v in out.items():
            totals[k] = totals[k] + v if k in totals else v
    return totals


def reduce_sums(stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """All-reduce (sum) every tensor across data-parallel ranks when torch.distributed is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for t in stats.values():
            torch.distributed.all_reduce(t)
    return dict(stats)


# --- language models ------------------------------------------------------------------------------------
def next_token_bits(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Score of a causal LM on windows x (b, L + 1): {"bits_sum" (L,) float64: summed bits of the prediction
    made after seeing positions 0..p, "count" (L,): how many windows predicted there}."""
    logits = model(x[:, :-1]).float()  # (b, L, V)
    nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")  # (b, L) nats
    return {"bits_sum": nll.double().sum(0) / LN2,
            "count": torch.full((x.shape[1] - 1,), float(x.shape[0]), dtype=torch.float64, device=x.device)}


def masked_batches(windows: Iterable[Tensor], seq_len: int, seed: int, mlm_probability: float = 0.15
                   ) -> Iterator[tuple[Tensor, Tensor]]:
    """(inputs, labels) of a masked LM's evaluation: the first ``seq_len`` tokens of each batch of windows,
    masked as in training (``mask_tokens``) with masks seeded by (seed, batch index), so every evaluation
    sees the same masks."""
    for i, x in enumerate(windows):
        yield mask_tokens(x[:, :seq_len], torch.Generator().manual_seed(seed * 1_000_003 + i), mlm_probability)


def masked_bits(model: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
    """Score of a masked LM on (inputs, labels) (b, L): {"bits_sum" (L,) float64: summed bits of the masked
    predictions at each position, "count" (L,): how many positions were masked there}."""
    inputs, labels = batch
    logits = model(inputs).float()  # (b, L, V)
    nll = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=IGNORE_INDEX)
    return {"bits_sum": nll.double().sum(0) / LN2, "count": (labels != IGNORE_INDEX).sum(0).double()}


def bits_per_token(stats: Mapping[str, Tensor]) -> dict[str, Any]:
    """LM sums -> {"bits_per_base", "n_tokens", "bits_sum" and "count" as numpy (L,) arrays}."""
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


# --- sequence classifiers ---------------------------------------------------------------------------------
def classification_counts(n_labels: int, n_windows: int | None = None) -> Score:
    """Score of a classifier on (x (b, L), y (b,)): {"loss": summed cross-entropy (float64), "confusion":
    (n_labels, n_labels) int64 counts, rows true labels, columns predictions}. With ``n_windows`` (one pass
    over that many windows, in order), also "hits": (n_windows,) int64, 1 where window i was classified right
    (for intervals that resample windows by group, ``cluster_accuracy_ci``)."""
    seen = [0]

    def score(model: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        x, y = batch
        logits = model(x).float()
        pred = logits.argmax(-1)
        counts = torch.bincount(y * n_labels + pred, minlength=n_labels * n_labels)
        out = {"loss": F.cross_entropy(logits, y, reduction="sum").double(),
               "confusion": counts.view(n_labels, n_labels)}
        if n_windows is not None:
            hits = torch.zeros(n_windows, dtype=torch.int64, device=y.device)
            hits[seen[0]:seen[0] + len(y)] = (pred == y).long()
            seen[0] += len(y)
            out["hits"] = hits
        return out

    return score


def confusion_pairs(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, predicted labels) with one pair per counted window (grouped by cell, not in the
    original order, which no metric depends on)."""
    k = confusion.shape[0]
    cells = np.repeat(np.arange(k * k), np.asarray(confusion).ravel())
    return cells // k, cells % k


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


def cluster_accuracy_ci(hits: np.ndarray, clusters: Sequence[Any], level: float = 0.95, n_resamples: int = 9999,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile interval of an accuracy whose windows come in correlated groups (e.g. the species' windows
    of one homologous region): a cluster bootstrap (``scipy.stats.bootstrap``, groups resampled with
    replacement, accuracy = hits / windows of the resample). hits: (n,) 0/1; clusters: (n,) group keys.
    Fewer than 5 groups cannot be resampled meaningfully: the Wilson interval of the windows then.
    Deterministic for a given ``seed``. (nan, nan) when n == 0."""
    hits = np.asarray(hits, dtype=np.float64)
    if hits.size == 0:
        return float("nan"), float("nan")
    _, group = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    n_hit, n_win = np.bincount(group, weights=hits), np.bincount(group).astype(np.float64)
    if len(n_win) < 5:
        return accuracy_ci(int(hits.sum()), int(hits.size), level)
    if n_hit.sum() in (0, n_win.sum()):  # every resample gives the same accuracy: the Wilson interval instead
        return accuracy_ci(int(hits.sum()), int(hits.size), level)
    from scipy.stats import bootstrap

    res = bootstrap((n_hit, n_win), lambda h, n, axis=-1: h.sum(axis) / n.sum(axis), paired=True, vectorized=True,
                    confidence_level=level, n_resamples=n_resamples, method="percentile",
                    rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def accuracy_ci(n_correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of an accuracy (scipy.stats.binomtest); (nan, nan) when n == 0."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(int(n_correct), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)
