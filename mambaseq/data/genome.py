"""Genome splits and the data-parallel batch sampler for next-token pretraining.

Splits cut every sequence into ``region_size`` blocks, give each block to train/val/test (seeded, every
split non-empty) and keep only the assembly-gap-free parts (no N run of ``min_gap`` bases or more), so
windows never contain gaps and no validation/test base is ever trained on. ``ShardedLMBatches`` draws the
training windows: the global batch is a pure function of (seed, step), and each rank takes its rows;
``sharded_eval_batches`` gives each rank its share of the held-out windows.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from .dna import N_ID, reverse_complement
from .store import TokenStore
from .windows import SPLITS, Interval, RandomWindows, TiledWindows


def acgt_runs(tokens: np.ndarray, min_gap: int = 1) -> np.ndarray:
    """(n, 2) int64 [start, end) runs of a (L,) token array that contain no N run of >= ``min_gap`` bases."""
    bad = tokens >= N_ID
    if min_gap > 1 and bad.any():  # keep short N runs inside intervals: only long gaps cut them
        edges = np.diff(np.concatenate(([0], bad.astype(np.int8), [0])))
        s, e = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        bad = np.zeros_like(bad)
        for a, b in zip(s[e - s >= min_gap].tolist(), e[e - s >= min_gap].tolist()):
            bad[a:b] = True
    edges = np.diff(np.concatenate(([0], (~bad).astype(np.int8), [0])))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], 1).astype(np.int64)


def genome_splits(store: TokenStore, region_size: int, fractions: Sequence[float] = (0.9, 0.05, 0.05),
                  seed: int = 0, min_gap: int = 1, min_len: int = 64) -> dict[str, list[Interval]]:
    """Disjoint train/val/test intervals: ``region_size`` blocks assigned at random (seeded), at least one
    block per split with a positive fraction, intersected with gap-free runs (length >= ``min_len``)."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"data.fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    if region_size < 1:
        raise ValueError(f"data.region_size must be >= 1, got {region_size}")
    blocks = [(i, s, min(s + region_size, int(n))) for i, n in enumerate(store.lengths.tolist())
              for s in range(0, int(n), region_size)]
    need = sum(f > 0 for f in fractions)
    if len(blocks) < need:
        raise ValueError(f"{store.path}: {len(blocks)} block(s) of region_size={region_size:,} cannot make "
                         f"{need} non-empty splits; use a smaller data.region_size")
    order = np.random.default_rng(seed).permutation(len(blocks))
    counts = [max(1, round(f * len(blocks))) if f > 0 else 0 for f in fractions[1:]]
    which = np.zeros(len(blocks), dtype=np.int64)  # train unless picked for val/test below
    which[order[: counts[0]]] = 1
    which[order[counts[0]: counts[0] + counts[1]]] = 2
    out: dict[str, list[Interval]] = {s: [] for s in SPLITS}
    runs = {i: acgt_runs(np.asarray(store.get(i)), min_gap) for i in range(len(store))}
    for (i, s, e), w in zip(blocks, which.tolist()):
        r = runs[i]
        r = r[(r[:, 1] > s) & (r[:, 0] < e)]
        for a, b in np.clip(r, s, e).tolist():
            if b - a >= min_len:
                out[SPLITS[w]].append(Interval(store.names[i], a, b, SPLITS[w]))
    for sp, f in zip(SPLITS, fractions):
        if f > 0 and not out[sp]:
            raise ValueError(f"{store.path}: the {sp} split has no gap-free stretch of >= {min_len} bases")
    return out


class ShardedLMBatches:
    """``batch_fn(step, seq_len, local_batch)`` for the trainer: windows of ``seq_len + 1`` tokens (the
    model sees exactly ``seq_len`` inputs) drawn from the train intervals.

    Data parallel: the GLOBAL batch of ``local_batch * world_size`` windows is a pure function of
    (seed, step), the same in every run; rank r takes rows [r * local_batch, (r + 1) * local_batch). So
    N processes see disjoint shards whose union is exactly what one process sees at the same global batch.
    """

    def __init__(self, store: TokenStore, intervals: Sequence[Interval], seed: int = 0, rank: int = 0,
                 world_size: int = 1, rc_augment: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.store, self.intervals, self.seed = store, list(intervals), seed
        self.rank, self.world_size, self.rc_augment = rank, world_size, rc_augment
        self._sources: dict[int, RandomWindows] = {}

    def _source(self, length: int) -> RandomWindows:
        if length not in self._sources:  # global stream: rank 0 of a world of 1, for every process
            self._sources[length] = RandomWindows(self.store, self.intervals, length, seed=self.seed)
        return self._sources[length]

    def __call__(self, step: int, seq_len: int, local_batch: int) -> torch.Tensor:
        """-> (local_batch, seq_len + 1) int64 tokens of this rank."""
        src = self._source(seq_len + 1)
        lo, hi = self.rank * local_batch, (self.rank + 1) * local_batch
        picks = src.picks(step, local_batch * self.world_size)[lo:hi]
        out = np.empty((local_batch, seq_len + 1), dtype=np.uint8)
        for row, (k, off) in enumerate(picks):
            iv = src.intervals[k]
            out[row] = self.store.window(iv.seq, iv.start + off, iv.start + off + seq_len + 1)
        if self.rc_augment:  # strand is arbitrary; flips drawn for the global batch, then sharded
            flip = np.random.default_rng([self.seed, step, 1]).random(local_batch * self.world_size)[lo:hi] < 0.5
            out[flip] = reverse_complement(out[flip])
        return torch.from_numpy(out).long()


def sharded_eval_batches(store: TokenStore, intervals: Sequence[Interval], seq_len: int, tokens: int,
                         batch_tokens: int, seed: int, rank: int = 0, world_size: int = 1) -> Iterator[torch.Tensor]:
    """This rank's share of an evenly spread, seeded set of ~``tokens`` held-out windows of ``seq_len + 1``
    tokens, in batches (b, seq_len + 1) of ~``batch_tokens``; the ranks' shares are disjoint and together
    the set one process evaluates."""
    tw = TiledWindows(store, intervals, seq_len + 1, max_per_label=max(1, tokens // seq_len), seed=seed)
    mine = list(range(rank, len(tw), world_size))
    b = max(1, batch_tokens // seq_len)
    for s in range(0, len(mine), b):
        yield torch.stack([tw[i][0] for i in mine[s: s + b]])
