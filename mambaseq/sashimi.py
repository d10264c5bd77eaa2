"""SaShiMi-style multi-scale Mamba backbone (Goel et al. 2022; the Mamba paper's SC09 model, Sec. 4.4).

A U-Net over time: at each scale `n_layer` residual Mamba blocks, then a pooling layer that folds `pool`
consecutive samples into one (width x `expand_pool`); the innermost scale runs its blocks; on the way up
each scale is unfolded back, added to the skip connection of the same scale, and refined by `n_layer`
more blocks. With pool (4, 4) a 16 kHz second runs at 16000, 4000 and 1000 steps.

Causality: the down-pool output at coarse step j sees fine inputs 4j..4j+3, so the up-pool shifts the
coarse sequence right by one step (zeros first): fine step t = 4j+k reads coarse step j-1, which only saw
inputs <= 4j-1 < t. The recurrent `step` mirrors this with a fold buffer (last pool-1 fine inputs) and an
unfold buffer (the pool fine outputs of the last finished coarse step): memory is O(1) in length.

    cfg = SaShiMiConfig(d_model=64, n_layer=2, pool=(4, 4), complex=True)
    lm = SaShiMiLM(cfg)                              # (b, L) ids -> (b, L, 256) logits
    cache = lm.allocate_inference_cache(b); lm(prefix, cache=cache); lm.step(ids (b,), cache) -> (b, 256)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from mambaseq.config import MambaBlockConfig
from mambaseq.generation import GenerationMixin
from mambaseq.modules.backbone import check_token_ids
from mambaseq.modules.block import ResidualBlock, norm_layer
from mambaseq.modules.init import init_weights
from mambaseq.modules.mamba import MambaCache
from mambaseq.pretrained import PretrainedMixin, register_architecture


@dataclass
class SaShiMiConfig(MambaBlockConfig):
    """Multi-scale backbone sizes. The block options (``d_state``, ``dt_min``, ``dt_max``, ``bias``, ...) are
    the fields of ``MambaBlockConfig``, passed unchanged to every block of every scale; only the default of
    ``complex`` differs (True: the paper's audio setting)."""

    complex: bool = True
    d_model: int = 64
    n_layer: int = 2  # residual Mamba blocks per scale on each side of the U (the centre gets 2 * n_layer)
    pool: tuple[int, ...] = (4, 4)
    expand_pool: int = 2  # width multiplier per pooling
    vocab_size: int = 256
    tie_embeddings: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.pool = tuple(int(p) for p in self.pool)
        if any(p < 2 for p in self.pool):
            raise ValueError(f"SaShiMiConfig.pool factors must be >= 2, got {self.pool}")
        for name in ("d_model", "n_layer", "expand_pool", "vocab_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SaShiMiConfig.{name} must be >= 1, got {getattr(self, name)!r}")

    @property
    def total_pool(self) -> int:
        out = 1
        for p in self.pool:
            out *= p
        return out


@dataclass
class ScaleCache:
    """Recurrent state of one scale: block caches, fold/unfold buffers, position, and the inner scale's."""

    down: list[MambaCache]
    up: list[MambaCache]
    fold: Tensor | None  # (b, pool, d) fine inputs of the coarse step being filled
    unfold: Tensor | None  # (b, pool, d) fine outputs of the last finished coarse step
    inner: "ScaleCache | None"
    pos: int = 0


class Scale(nn.Module):
    """One level of the U-Net (recursively holding the coarser ones): (b, L, d) -> (b, L, d), causal."""

    def __init__(self, cfg: SaShiMiConfig, level: int, d: int) -> None:
        super().__init__()
        self.d = d
        self.down_blocks = nn.ModuleList(ResidualBlock(cfg, d_model=d) for _ in range(cfg.n_layer))
        self.up_blocks = nn.ModuleList(ResidualBlock(cfg, d_model=d) for _ in range(cfg.n_layer))
        self.p = cfg.pool[level] if level < len(cfg.pool) else 0
        if self.p:
            d_in = d * cfg.expand_pool
            self.fold = nn.Linear(d * self.p, d_in)  # p fine steps (time-major) -> one coarse step
            self.unfold = nn.Linear(d_in, d * self.p)  # one coarse step -> p fine steps
            self.inner = Scale(cfg, level + 1, d_in)

    def forward(self, x: Tensor, cache: ScaleCache | None = None) -> Tensor:
        """x (b, L, d) -> (b, L, d). With ``cache``: continues from the cached state (chunked prefill; a fresh
        cache is the empty history) and leaves the state after the chunk in it."""
        b, L, d = x.shape
        for i, blk in enumerate(self.down_blocks):
            x = blk(x, cache=cache.down[i] if cache else None)
        if self.p:
            r0 = cache.pos % self.p if cache is not None else 0  # fine inputs already waiting in the fold buffer
            xx = torch.cat([cache.fold[:, :r0].to(x.dtype), x], 1) if r0 else x
            m = xx.shape[1] // self.p  # complete coarse steps; a trailing partial group waits in the fold buffer
            # the coarse output before this chunk's first group (zeros at the start of the sequence)
            prev = cache.unfold.reshape(b, 1, self.p * d).to(x.dtype) if cache is not None else \
                x.new_zeros(b, 1, self.p * d)
            coarse_out = None
            if m:
                coarse = self.fold(xx[:, : m * self.p].reshape(b, m, self.p * d))
                coarse_out = self.unfold(self.inner(coarse, cache.inner if cache else None))  # (b, m, p*d)
                # shift right by one coarse step: fine step t only sees coarse outputs of inputs < t
                shifted = torch.cat([prev, coarse_out], 1)
            else:
                shifted = prev
            y = shifted.reshape(b, -1, d)[:, r0 : r0 + L]
            if cache is not None:
                r = xx.shape[1] - m * self.p
                cache.fold[:, :r] = xx[:, m * self.p :]
                if coarse_out is not None:
                    cache.unfold.copy_(coarse_out[:, -1].reshape(b, self.p, d))
            x = x + y
        for i, blk in enumerate(self.up_blocks):
            x = blk(x, cache=cache.up[i] if cache else None)
        if cache is not None:
            cache.pos += L
        return x

    def step(self, x: Tensor, cache: ScaleCache) -> Tensor:
        """x (b, d) -> (b, d); updates `cache` in place."""
        for blk, c in zip(self.down_blocks, cache.down):
            x = blk.step(x, c)
        if self.p:
            k = cache.pos % self.p
            y = cache.unfold[:, k].clone()  # from the coarse step before the current group
            cache.fold[:, k] = x
            if k == self.p - 1:  # group complete: advance the coarser scale by one step
                b = x.shape[0]
                o = self.inner.step(self.fold(cache.fold.reshape(b, self.p * self.d)), cache.inner)
                cache.unfold.copy_(self.unfold(o).reshape(b, self.p, self.d))
            x = x + y
        for blk, c in zip(self.up_blocks, cache.up):
            x = blk.step(x, c)
        cache.pos += 1
        return x

    def set_position(self, cache: ScaleCache, t: int) -> None:
        """Mark ``cache`` as having consumed ``t`` fine steps (each coarser scale t // pool of them)."""
        cache.pos = t
        if self.p:
            self.inner.set_position(cache.inner, t // self.p)

    def allocate_cache(self, batch_size: int, device=None, dtype=None, ssm_state_dtype=None) -> ScaleCache:
        w = next(self.parameters())
        device, dtype = device or w.device, dtype or w.dtype
        buf = (lambda: torch.zeros(batch_size, self.p, self.d, device=device, dtype=dtype)) if self.p else None
        kw = dict(ssm_state_dtype=ssm_state_dtype)
        return ScaleCache(
            down=[blk.allocate_cache(batch_size, device, dtype, **kw) for blk in self.down_blocks],
            up=[blk.allocate_cache(batch_size, device, dtype, **kw) for blk in self.up_blocks],
            fold=buf() if buf else None,
            unfold=buf() if buf else None,
            inner=self.inner.allocate_cache(batch_size, device, dtype, **kw) if self.p else None,
        )


@register_architecture
class SaShiMiLM(nn.Module, PretrainedMixin, GenerationMixin):
    """Embedding -> multi-scale Mamba U-Net -> norm -> tied head: (b, L) ids -> (b, L, vocab_size) logits.
    ``generate(input_ids, max_new_tokens=..., cg=True)``: see ``mambaseq.generation.generate``; checkpoints:
    ``save_pretrained`` / ``from_pretrained`` / ``mambaseq.model.load_pretrained`` (``mambaseq.pretrained``)."""

    config_class = SaShiMiConfig

    def __init__(self, cfg: SaShiMiConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.body = Scale(cfg, 0, cfg.d_model)
        self.norm_f = norm_layer(cfg, cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        n_blocks = 2 * cfg.n_layer * (len(cfg.pool) + 1)
        init_weights(self, n_blocks)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embedding.weight

    def forward(self, input_ids: Tensor, cache: ScaleCache | None = None) -> Tensor:
        if input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError(f"input_ids must be (batch, length) integer tokens, got {input_ids.dtype} "
                             f"{tuple(input_ids.shape)}")
        check_token_ids(input_ids, self.cfg.vocab_size)
        return self.lm_head(self.norm_f(self.body(self.embedding(input_ids.long()), cache)))

    def step(self, input_ids: Tensor, cache: ScaleCache) -> Tensor:
        """input_ids (b,) -> logits (b, vocab_size); updates `cache` in place."""
        check_token_ids(input_ids, self.cfg.vocab_size)
        return self.lm_head(self.norm_f(self.body.step(self.embedding(input_ids.long()), cache)))

    def allocate_inference_cache(self, batch_size: int, device=None, dtype=None,
                                 ssm_state_dtype=None) -> ScaleCache:
        """The multi-scale recurrent state (see ``Mamba.allocate_cache`` for ``ssm_state_dtype``)."""
        return self.body.allocate_cache(batch_size, device, dtype, ssm_state_dtype)

    @property
    def decode_phases(self) -> int:
        """The step's work depends on the position modulo this (which scales advance): one graph per phase."""
        return self.cfg.total_pool

    def set_decode_position(self, cache: ScaleCache, t: int) -> None:
        """Set the positions of every scale of ``cache`` as after ``t`` consumed tokens (graph replays
        advance the tensors but not these Python counters)."""
        self.body.set_position(cache, t)
