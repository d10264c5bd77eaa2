"""Learning is tested, not assumed: the CPU sequence classifier must learn a known k-mer signal as well
as a k-mer logistic regression does, within a fixed step budget (about a minute on 2 cores).

Data: three classes of DNA, each an order-1 Markov chain whose dinucleotide preferences differ from the
others' (the signal is entirely in 2-mer counts, so a 2..4-mer logistic regression is the right yardstick).
Golden values (tests/golden/learning.json) pin the accuracy this recipe reached when it was checked in;
a change of numerics or recipe that learns less fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mambaseq.config import MambaConfig
from mambaseq.model import MambaForSequenceClassification
from mambaseq.data.kmers import kmer_baselines
from mambaseq.training import TrainConfig, classification_loss
from mambaseq.training import train as train_loop

GOLDEN = json.loads((Path(__file__).parent / "golden" / "learning.json").read_text())
K, L = 3, 256


def _chains(rng: np.random.Generator) -> np.ndarray:
    """(K, 4, 4) transition matrices: a shared background plus class-specific preferences."""
    base = rng.dirichlet(np.full(4, 8.0), size=4)
    out = np.stack([base * np.exp(rng.normal(0, 0.35, (4, 4))) for _ in range(K)])
    return out / out.sum(-1, keepdims=True)


def _sample(chains: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n,) class ids -> (n, L) tokens drawn from each class's chain (vectorised over rows)."""
    n = labels.size
    cum = np.cumsum(chains[labels], axis=-1)  # (n, 4, 4)
    x = np.empty((n, L), dtype=np.int64)
    x[:, 0] = rng.integers(0, 4, n)
    u = rng.random((n, L))
    rows = np.arange(n)
    for i in range(1, L):
        x[:, i] = np.minimum((u[:, i, None] > cum[rows, x[:, i - 1]]).sum(-1), 3)
    return x


@pytest.mark.parametrize("kmer_size, wide", [(1, 0), (6, 0), (6, 8)], ids=["bases", "bases+6mers", "main-job"])
def test_classifier_learns_a_kmer_signal_as_well_as_logistic_regression(tmp_path, kmer_size, wide):
    """main-job: the README main job's classifier (6-mer tokens + the wide 8-mer head standardised by training
    windows' statistics, configs/model/apes_cpu)."""
    rng = np.random.default_rng(20261130)
    chains = _chains(rng)
    test_y = np.repeat(np.arange(K), 150)
    test_x = _sample(chains, test_y, np.random.default_rng(1))
    train_y = np.tile(np.arange(K), 400)
    train_x = _sample(chains, train_y, np.random.default_rng(2))
    base = kmer_baselines(train_x, train_y, test_x, test_y, ks=(2, 3, 4))
    best = max(base.values())

    g = {**GOLDEN["markov3"], **GOLDEN["markov3"].get(f"kmer{kmer_size}" + (f"_wide{wide}" if wide else ""), {})}
    cfg = MambaConfig.from_name("tiny", n_layer=2, d_state=8, vocab_size=10, num_labels=K, pooling="mean",
                                kmer_size=kmer_size, wide_kmer_size=wide, wide_standardize="fit" if wide else "batch")
    torch.manual_seed(0)
    model = MambaForSequenceClassification(cfg)
    if wide:  # as the apes pipeline does (data.wide_fit_windows)
        model.wide.fit_standardizer(torch.from_numpy(train_x[:512]))
    tcfg = TrainConfig(max_steps=g["steps"], lr=g["lr"], warmup_steps=10, batch_size=g["batch_size"], seq_len=L,
                       progress=False, log_every=1000, ckpt_every=0, device="cpu")

    def batch_fn(step: int, length: int, batch_size: int):
        r = np.random.default_rng([3, step])
        y = r.integers(0, K, batch_size)
        return torch.from_numpy(_sample(chains, y, r)), torch.from_numpy(y)

    train_loop(model, classification_loss, batch_fn, tcfg, tmp_path)
    model.eval()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(test_x)).argmax(-1).numpy() == test_y).mean())
    print(f"classifier {acc:.3f} vs k-mer logistic regressions {base}")
    assert best >= g["baseline_min"], f"the task lost its signal: best k-mer baseline {best:.3f}"
    assert acc >= best - g["margin_vs_baseline"], f"classifier {acc:.3f} < best k-mer baseline {best:.3f}"
    assert acc >= g["accuracy_min"], f"classifier {acc:.3f} below the golden {g['accuracy_min']}"
