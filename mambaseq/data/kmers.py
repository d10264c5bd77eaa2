"""k-mer counting on token ids (A C G T N = 0..4) and what is built on it: per-window k-mer profiles and
the k-mer logistic-regression baseline of the great-apes task, pooled k-mer spectra, GC content and the
Jensen-Shannon divergence that compare generated DNA with real DNA.

    codes = kmer_codes(x, k=3)               # (..., L - 2) ids of the overlapping 3-mers, -1 where an N is
    kmer_profiles(x, k=4)                    # (b, 5^4) frequencies per window, N counted as a fifth letter
    kmer_spectrum(seqs, k=6)                 # (4^6,) pooled frequencies of ACGT 6-mers
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np


def kmer_codes(x: np.ndarray, k: int, letters: int = 4) -> np.ndarray:
    """(..., L) token ids -> (..., L - k + 1) int64 ids of the overlapping k-mers in base ``letters``, the
    first base most significant. ``letters=4``: ACGT k-mers, -1 for a k-mer holding any other id (N, a
    special); ``letters=5``: every id >= 4 reads as N, a fifth letter. ValueError if L < k."""
    x = np.asarray(x)
    L = x.shape[-1]
    if L < k:
        raise ValueError(f"kmer_codes: windows of {L} bases are shorter than k={k}")
    xs = np.minimum(x, letters - 1).astype(np.int64)
    codes = np.zeros(x.shape[:-1] + (L - k + 1,), dtype=np.int64)
    for i in range(k):  # vectorised over rows and positions; k is small
        codes = codes * letters + xs[..., i : L - k + 1 + i]
    if letters == 4:
        codes[np.lib.stride_tricks.sliding_window_view(x > 3, k, axis=-1).any(-1)] = -1
    return codes


# --- per-window profiles and the k-mer baseline classifier --------------------------------------------------
def kmer_profiles(x: np.ndarray, k: int = 4, max_tokens: int = 1 << 24) -> np.ndarray:
    """(b, L) token ids -> (b, 5^k) float32 k-mer frequency profiles over the alphabet A, C, G, T, N (N
    counted as a fifth letter, every other id read as N), computed in row blocks of at most ``max_tokens``."""
    b, L = x.shape
    if L < k:
        raise ValueError(f"kmer_profiles: windows of {L} bases are shorter than k={k}")
    out = np.zeros((b, 5**k), dtype=np.float32)
    rows = max(1, max_tokens // L)
    for r0 in range(0, b, rows):
        ids = kmer_codes(np.asarray(x[r0 : r0 + rows]), k, letters=5)
        n = ids.shape[0]
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


def kmer_baseline_predictions(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                              ks: Sequence[int] = (3, 4, 5, 6), progress: bool = False) -> dict[int, np.ndarray]:
    """{k: (n_test,) predictions} of ``kmer_baseline`` for each k (the same train and test windows; ``test_y``
    only for the progress lines). ``progress`` prints a line as each fit starts and ends (the k = 6 fit takes
    minutes on a CPU: 5^6 features)."""
    out = {}
    for i, k in enumerate(ks, 1):
        t0 = time.perf_counter()
        if progress:
            print(f"k-mer baseline {i}/{len(ks)}: k={k} logistic regression on {len(train_x):,} windows x "
                  f"{5**k:,} k-mer frequencies ...", flush=True)
        out[int(k)] = kmer_baseline(train_x, train_y, test_x, k)
        if progress:
            print(f"k-mer baseline {i}/{len(ks)}: k={k} test accuracy {(out[int(k)] == test_y).mean():.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def kmer_baselines(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   ks: Sequence[int] = (3, 4, 5, 6), progress: bool = False) -> dict[int, float]:
    """{k: test accuracy} of ``kmer_baseline`` for each k (``kmer_baseline_predictions`` scored)."""
    preds = kmer_baseline_predictions(train_x, train_y, test_x, test_y, ks, progress)
    return {k: float((p == test_y).mean()) for k, p in preds.items()}


# --- pooled statistics of sets of sequences ------------------------------------------------------------------
def kmer_spectrum(seqs: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Normalised counts (4^k,) of ACGT k-mers over a list of (L,) token arrays (k-mers with N skipped)."""
    counts = np.zeros(4**k, dtype=np.float64)
    for s in seqs:
        if len(s) < k:
            continue
        codes = kmer_codes(np.asarray(s, dtype=np.int64), k)
        counts += np.bincount(codes[codes >= 0], minlength=4**k)
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
