"""SC09 generation metrics on our data: a spoken-digit classifier and IS, modified IS, AM score, FID.

Protocol (as in WaveGAN / SaShiMi / the Mamba paper, with our own classifier since theirs is not ours to
ship): a CNN on log-mel spectrograms is trained on the training split; its softmax gives p(y|x) and its
penultimate layer gives the features for FID against the test split. Real held-out clips scored the same
way are the ceiling.

    IS  = exp E_x KL(p(y|x) || p(y))                     higher is better, at most n_classes
    mIS = exp E_{x,x'} KL(p(y|x) || p(y|x'))             higher is better (within-class diversity too)
    AM  = KL(p_train(y) || p(y)) + E_x H(p(y|x))         lower is better, 0 at best
    FID = |mu_g - mu_r|^2 + tr(S_g + S_r - 2 (S_g S_r)^1/2) on classifier features, lower is better
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import linalg
from safetensors.torch import save_model
from torch import Tensor
from tqdm import tqdm

from ..fileio import atomic_path, load_weights, read_json, write_json
from ..training.evaluation import accuracy_ci
from .features import LogMel

EPS = 1e-12


# ----------------------------------------------------------------------------- scores

def _check_probs(probs: np.ndarray, name: str = "probs") -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1:
        raise ValueError(f"{name} must be (n_samples, n_classes), got shape {p.shape}")
    if (p < -1e-9).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError(f"{name} rows must be probability distributions (non-negative, summing to 1)")
    return np.clip(p, 0.0, 1.0)


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p_i || q_i) per row; 0 log 0 = 0."""
    return np.sum(np.where(p > 0, p * (np.log(p + EPS) - np.log(q + EPS)), 0.0), axis=-1)


def inception_score(probs: np.ndarray) -> float:
    """probs (n, C) classifier softmax on samples -> IS = exp E KL(p(y|x) || p(y))."""
    p = _check_probs(probs)
    return float(np.exp(_kl_rows(p, p.mean(0, keepdims=True)).mean()))


def modified_inception_score(probs: np.ndarray) -> float:
    """mIS = exp E_{x, x'} KL(p(y|x) || p(y|x')) over all ordered pairs (Gurumurthy et al. 2017)."""
    p = _check_probs(probs)
    logp = np.log(p + EPS)
    ent = np.sum(np.where(p > 0, p * logp, 0.0), 1)  # (n,) sum p log p
    cross = np.where(p > 0, p, 0.0) @ logp.T  # (n, n): sum_y p_i(y) log p_j(y)
    return float(np.exp((ent[:, None] - cross).mean()))


def am_score(probs: np.ndarray, train_class_prior: np.ndarray) -> float:
    """AM = KL(p_train(y) || p(y)) + E_x H(p(y|x)) (Zhou et al. 2018); 0 for confident, class-balanced samples."""
    p = _check_probs(probs)
    prior = _check_probs(np.asarray(train_class_prior, dtype=np.float64)[None], "train_class_prior")
    entropy = -np.sum(np.where(p > 0, p * np.log(p + EPS), 0.0), 1).mean()
    return float(_kl_rows(prior, p.mean(0, keepdims=True))[0] + entropy)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID between two feature sets (n_a, F), (n_b, F) via Gaussian fits."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"features must be (n>=2, F) with equal F, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr (S_a S_b)^1/2 = tr (S_a^1/2 S_b S_a^1/2)^1/2: a symmetric PSD form, so eigenvalues are stable even
    # when a covariance is singular (fewer samples than features, e.g. 16 generated clips)
    w, v = linalg.eigh(s_a)
    half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(linalg.eigvalsh(half @ s_b @ half), 0, None)).sum()
    return float(max(0.0, np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * tr_covmean))


# ----------------------------------------------------------------------------- classifier

class DigitClassifier(nn.Module):
    """Log-mel CNN: waveform (b, 16000) -> logits (b, n_classes); `features` gives the (b, width) embedding.

    Mel bands are the channels of 1-D convolutions over time (cheaper per clip on a CPU than 2-D convs):
    64 bands at a 20 ms hop, four conv blocks, global max-pool over time (position-free). About 4 M
    multiply-adds per clip, so it trains in a minute or two on 2 CPU cores.
    """

    def __init__(self, n_classes: int = 10, width: int = 128, n_mels: int = 64) -> None:
        super().__init__()
        self.config = {"n_classes": n_classes, "width": width, "n_mels": n_mels}
        self.logmel = LogMel(n_mels=n_mels, n_fft=640, hop=320)
        layers: list[nn.Module] = []
        for i, (cin, k) in enumerate([(n_mels, 5), (width, 3), (width, 3), (width, 3)]):
            layers += [nn.Conv1d(cin, width, k, padding=k // 2, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
            if i < 3:
                layers.append(nn.MaxPool1d(2))
        self.conv = nn.Sequential(*layers)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(width, n_classes)

    def spectrogram(self, wav: Tensor) -> Tensor:
        """(b, T) -> normalised log-mel (b, n_mels, frames); loudness-free (per-clip standardised)."""
        m = self.logmel(wav)
        return (m - m.mean(dim=(1, 2), keepdim=True)) / (m.std(dim=(1, 2), keepdim=True) + 1e-5)

    def features_from_spec(self, spec: Tensor) -> Tensor:
        return self.conv(spec).amax(dim=2)  # global max-pool over time: position-free (b, width)

    def features(self, wav: Tensor) -> Tensor:
        return self.features_from_spec(self.spectrogram(wav))

    def forward(self, wav: Tensor) -> Tensor:
        return self.head(self.drop(self.features(wav)))

    def save(self, directory: str | os.PathLike, **meta) -> Path:
        d = Path(directory)
        with atomic_path(d / "classifier.safetensors") as tmp:
            save_model(self, str(tmp))
        write_json({**meta, **self.config}, d / "classifier.json", indent=1)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "DigitClassifier":
        d = Path(directory)
        cfg = read_json(d / "classifier.json")  # errors name the file
        m = cls(cfg["n_classes"], cfg["width"], cfg["n_mels"])
        load_weights(m, d / "classifier.safetensors")
        return m.eval()


def _augment(spec: Tensor, g: torch.Generator) -> Tensor:
    """Spectrogram (b, F, T) augmentation: random circular time shift, one time mask and one frequency
    mask (SpecAugment), so the classifier keys on the word, not on where or how loudly it was said."""
    b, F_, T = spec.shape
    shifts = torch.randint(-T // 4, T // 4 + 1, (b,), generator=g)
    idx = (torch.arange(T)[None] - shifts[:, None]) % T  # (b, T)
    spec = spec.gather(2, idx[:, None, :].expand_as(spec))
    t0 = torch.randint(0, T, (b, 1), generator=g)
    tw = torch.randint(0, T // 8 + 1, (b, 1), generator=g)
    f0 = torch.randint(0, F_, (b, 1), generator=g)
    fw = torch.randint(0, F_ // 8 + 1, (b, 1), generator=g)
    tmask = ((torch.arange(T)[None] >= t0) & (torch.arange(T)[None] < t0 + tw))[:, None, :]
    fmask = ((torch.arange(F_)[None] >= f0) & (torch.arange(F_)[None] < f0 + fw))[:, :, None]
    return spec.masked_fill(tmask | fmask, 0.0)


def train_classifier(x_train: Tensor, y_train: Tensor, x_val: Tensor | None = None, y_val: Tensor | None = None,
                     epochs: int = 15, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
                     progress: bool = True) -> DigitClassifier:
    """Train on waveforms (n, T) float / labels (n,) int; returns the model in eval mode."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = DigitClassifier(int(y_train.max()) + 1)
    with torch.no_grad():  # the front end has no parameters: compute every spectrogram once
        specs = torch.cat([model.spectrogram(x_train[i : i + 256].float()) for i in range(0, len(x_train), 256)])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    steps = epochs * ((len(specs) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)
    bar = tqdm(total=steps, desc="digit classifier", disable=not progress, mininterval=1.0)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(specs), generator=g)
        for i in range(0, len(perm), batch_size):
            j = perm[i : i + batch_size]
            logits = model.head(model.drop(model.features_from_spec(_augment(specs[j], g))))
            loss = F.cross_entropy(logits, y_train[j], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(epoch=ep, loss=f"{loss.item():.3f}")
        if x_val is not None and progress:
            bar.set_postfix(epoch=ep, val_acc=f"{accuracy(model, x_val, y_val):.3f}")
    bar.close()
    return model.eval()


@torch.no_grad()
def classify(model: DigitClassifier, wav: Tensor, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Waveforms (n, T) -> (probs (n, C), features (n, width)) as float64 numpy."""
    model.eval()
    probs, feats = [], []
    for i in range(0, len(wav), batch_size):
        f = model.features(wav[i : i + batch_size].float())
        probs.append(model.head(f).softmax(-1))
        feats.append(f)
    return torch.cat(probs).double().numpy(), torch.cat(feats).double().numpy()


def accuracy(model: DigitClassifier, wav: Tensor, labels: Tensor) -> float:
    probs, _ = classify(model, wav)
    return float((probs.argmax(1) == labels.numpy()).mean())


def sample_metrics(model: DigitClassifier, samples: Tensor, reference: Tensor, train_prior: np.ndarray) -> dict:
    """All four scores for `samples` (n, T), FID against `reference` (m, T) (the real test split)."""
    p, f = classify(model, samples)
    _, f_ref = classify(model, reference)
    return {"n": int(len(samples)), "IS": inception_score(p), "mIS": modified_inception_score(p),
            "AM": am_score(p, train_prior), "FID": frechet_distance(f, f_ref),
            "predicted_digit_counts": np.bincount(p.argmax(1), minlength=p.shape[1]).tolist()}


def continuation_scores(clf: DigitClassifier, continued: torch.Tensor, sources: torch.Tensor, labels: torch.Tensor,
                        n_prefix: int) -> dict[str, Any]:
    """Is the digit kept? Prefix-conditioned continuation accuracy (issue 16; the digit-classifier protocol of
    the SC09 metrics above applied to continuations): the classifier's accuracy against the true ``labels``
    (n,) int on the ``continued`` clips (n, T) float (a real opening of ``n_prefix`` samples + the generated
    rest), on their real ``sources`` (n, T) (the ceiling), and on the sources with everything after the
    opening silenced (the control: what the opening alone gives away). Each with its Wilson 95% interval
    (scipy, ``mambaseq.training.evaluation.accuracy_ci``) and the predicted digits. Raises ValueError when
    the three inputs disagree in length or n is 0."""
    if not len(labels) or not len(continued) == len(sources) == len(labels):
        raise ValueError(f"continuation_scores: continued {tuple(continued.shape)}, sources {tuple(sources.shape)} "
                         f"and labels {tuple(labels.shape)} must hold the same n >= 1 clips")
    out: dict[str, Any] = {"n": int(len(labels)), "prefix_samples": int(n_prefix)}
    prefix_only = sources.clone()
    prefix_only[:, n_prefix:] = 0
    for name, wav in (("continued", continued), ("real_source", sources), ("prefix_only", prefix_only)):
        pred = classify(clf, wav)[0].argmax(1)
        hits = int((pred == labels.numpy()).sum())
        out[f"{name}_accuracy"] = hits / len(labels)
        out[f"{name}_accuracy_ci95"] = list(accuracy_ci(hits, len(labels)))
        out[f"{name}_predicted"] = pred.tolist()
    return out
