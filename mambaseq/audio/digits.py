"""The spoken-digit data set in memory (SC09 layout, built by ``mambaseq.data_prep.sc09``).

A prepared set is one folder::

    manifest.json                  synthetic flag, source, build parameters, speakers per split, counts
    {train,val,test}_audio.npy     int16 (n, 16000): 1 s at 16 kHz, mono
    {train,val,test}_labels.npy    int64 (n,): digit 0..9
    clips.csv                      split, label, speaker, and for synthetic clips speed/pitch/gain
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .io import SAMPLE_RATE
from .quantize import encode

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "val", "test")
CLIP_LEN = SAMPLE_RATE  # 1 s


class Digits:
    """The prepared splits in memory: waveforms float32 (n, 16000), labels (n,), tokens uint8 (n, 16000)
    quantized by ``quantization`` (mambaseq.audio.quantize: mulaw | linear)."""

    def __init__(self, data_dir: str | Path, quantization: str) -> None:
        self.dir = Path(data_dir)
        self.manifest = json.loads((self.dir / "manifest.json").read_text())
        self.synthetic = bool(self.manifest["synthetic"])
        self.quantization = quantization
        self.wave: dict[str, torch.Tensor] = {}
        self.labels: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, torch.Tensor] = {}
        for s in SPLITS:
            pcm = np.load(self.dir / f"{s}_audio.npy", mmap_mode="r")
            self.wave[s] = torch.from_numpy(np.asarray(pcm, dtype=np.float32) / 32768.0)
            self.labels[s] = torch.from_numpy(np.load(self.dir / f"{s}_labels.npy"))
            self.tokens[s] = torch.from_numpy(encode(self.wave[s].numpy(), quantization).astype(np.uint8))

    @property
    def label(self) -> str:
        return "SYNTHETIC espeak-ng digits" if self.synthetic else "Speech Commands digits (SC09)"

    def train_prior(self) -> np.ndarray:
        return np.bincount(self.labels["train"].numpy(), minlength=len(DIGITS)) / len(self.labels["train"])


def spread(n_total: int, k: int) -> torch.Tensor:
    """k indices evenly spread over range(n_total): clips are stored grouped by speaker, so a prefix of a
    split would be one or two voices."""
    return torch.from_numpy(np.unique(np.linspace(0, n_total - 1, min(k, n_total)).round().astype(np.int64)))


def balanced_pick(labels: torch.Tensor | np.ndarray, k: int, seed: int) -> torch.Tensor:
    """k indices (int64, (min(k, n),)) into ``labels`` (n,) taking the classes in turn (0, 1, ..., 9, 0, ...),
    each class's clips in a seeded random order, so any prefix of the result is as class-balanced as the
    split allows (a class that runs out is skipped). Raises ValueError for k < 0 or labels that are not 1-D."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"balanced_pick: labels must be 1-D (n,), got shape {y.shape}")
    if k < 0:
        raise ValueError(f"balanced_pick: k must be >= 0, got {k}")
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(np.flatnonzero(y == c))) for c in np.unique(y)]
    out: list[int] = []
    while len(out) < min(k, len(y)):
        out += [int(q.pop(0)) for q in queues if q][: k - len(out)]
    return torch.tensor(out, dtype=torch.int64)


def with_start(tokens: torch.Tensor, start: int) -> torch.Tensor:
    """(n, T) tokens -> (n, T + 1) int64 with the start (silence) token first, so every sample is predicted."""
    return torch.cat([torch.full((tokens.shape[0], 1), start, dtype=torch.long), tokens.long()], 1)
