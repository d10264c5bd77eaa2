"""Masked-LM training pairs and loss (BERT, Devlin et al. 2019, Sec. 3.1; as used for DNA by Caduceus).

Of the maskable positions (A, C, G, T, N: never [PAD] or other specials), each is chosen with probability
``mlm_probability`` (0.15); a chosen position becomes [MASK] with probability 0.8, a random base (A/C/G/T)
with probability 0.1, and stays unchanged with probability 0.1. Labels hold the original id at chosen
positions and -100 (ignored) elsewhere.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mambaseq.data.dna import MASK_ID, PAD_ID, T_ID

from .losses import LN2

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index


def mask_tokens(input_ids: Tensor, generator: torch.Generator | None = None, mlm_probability: float = 0.15,
                *, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """BERT masking of DNA token ids.

    Args:
        input_ids: (batch, L) integer ids (mambaseq.data.dna.VOCAB).
        generator: CPU generator for the random choices (reproducible masks).
        mlm_probability: chance that a maskable position is chosen, in (0, 1].
        noise: optional (3, batch, L) uniforms in [0, 1) to use instead of drawing (data-parallel ranks take
            their rows of one global draw).
    Returns:
        (inputs, labels), both (batch, L) int64 on ``input_ids``' device; labels are -100 where not chosen.
    Raises:
        ValueError for a bad shape or probability.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"mask_tokens expects (batch, length) ids, got shape {tuple(input_ids.shape)}")
    if not 0 < mlm_probability <= 1:
        raise ValueError(f"mlm_probability must be in (0, 1], got {mlm_probability}")
    ids = input_ids.long()
    if noise is None:
        noise = torch.rand((3, *ids.shape), generator=generator)
    if tuple(noise.shape) != (3, *ids.shape):
        raise ValueError(f"noise must be (3, {ids.shape[0]}, {ids.shape[1]}), got {tuple(noise.shape)}")
    noise = noise.to(ids.device)
    chosen = (noise[0] < mlm_probability) & (ids < PAD_ID)
    to_mask = chosen & (noise[1] < 0.8)
    to_random = chosen & (noise[1] >= 0.9)  # 0.8 <= u < 0.9: kept as is
    random_base = (noise[2] * (T_ID + 1)).long().clamp(max=T_ID)
    inputs = torch.where(to_mask, torch.full_like(ids, MASK_ID), torch.where(to_random, random_base, ids))
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    return inputs, labels


def mlm_loss(model: nn.Module, batch: tuple[Tensor, Tensor]):
    """batch = (inputs, labels) from ``mask_tokens``; model -> logits (b, L, V). Cross-entropy over the chosen
    positions. Metrics: acc and bits per token at those positions; ``tokens`` = input tokens processed."""
    inputs, labels = batch
    logits = model(inputs).float()
    chosen = labels != IGNORE_INDEX
    if not bool(chosen.any()):  # nothing masked in this (tiny) batch: a zero loss that still has a graph
        zero = logits.sum() * 0.0
        return zero, {"acc": 0.0, "bits_per_token": 0.0, "tokens": inputs.numel()}
    loss = F.cross_entropy(logits[chosen], labels[chosen])
    acc = (logits[chosen].argmax(-1) == labels[chosen]).float().mean()
    return loss, {"acc": float(acc), "bits_per_token": float(loss.detach()) / LN2, "tokens": inputs.numel()}


class MaskedBatches:
    """Wraps an LM ``batch_fn(step, seq_len, local_batch) -> ids (local_batch, >= seq_len)`` into masked-LM
    pairs ``(inputs, labels)`` of ``seq_len`` tokens. The masks are a function of (seed, step) drawn for the
    global batch of ``local_batch * world_size`` rows, of which ``rank`` takes its rows, so N processes see
    the masks one process sees at the same global batch, and resuming replays them exactly."""

    def __init__(self, batch_fn: Callable[[int, int, int], Tensor], seed: int = 0, mlm_probability: float = 0.15,
                 rank: int = 0, world_size: int = 1):
        self.batch_fn, self.seed, self.p = batch_fn, seed, mlm_probability
        self.rank, self.world_size = rank, world_size

    def __call__(self, step: int, seq_len: int, local_batch: int) -> tuple[Tensor, Tensor]:
        ids = self.batch_fn(step, seq_len, local_batch)[:, :seq_len]
        gen = torch.Generator().manual_seed(int(np.random.default_rng([self.seed, step, 2]).integers(2**62)))
        noise = torch.rand(3, local_batch * self.world_size, seq_len, generator=gen)
        lo = self.rank * local_batch
        return mask_tokens(ids, mlm_probability=self.p, noise=noise[:, lo: lo + local_batch])
