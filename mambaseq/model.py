"""Mamba models: the causal LM (tied embeddings) and the sequence classifier, on ``MambaBackbone``.

Checkpoints describe themselves: ``save_pretrained(dir)`` writes ``config.json`` (the ``MambaConfig`` plus
``architecture``) and ``model.safetensors``; ``from_pretrained(dir)`` rebuilds the same model bit-exactly
(``mambaseq.pretrained``). ``load_pretrained`` / ``build_model`` pick any registered architecture by name,
``SaShiMiLM`` and ``MambaForMaskedLM`` included.

Also importable from here, as before the remodel: ``ResidualBlock``, ``MambaBackbone``, ``add_lm_head``,
``check_token_ids``, ``kmer_ids`` (``mambaseq.modules``), ``PretrainedMixin``, ``ARCHITECTURES``,
``load_pretrained``, ``CONFIG_NAME``, ``WEIGHTS_NAME`` (``mambaseq.pretrained`` / ``mambaseq.config``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from mambaseq.config import CONFIG_NAME, WEIGHTS_NAME, MambaConfig
from mambaseq.generation import GenerationMixin
from mambaseq.modules import rc
from mambaseq.modules.backbone import MambaBackbone, add_lm_head, check_token_ids, kmer_ids
from mambaseq.modules.block import ResidualBlock
from mambaseq.modules.init import init_weights
from mambaseq.modules.mamba import MambaCache
from mambaseq.pretrained import (ARCHITECTURES, PretrainedMixin, architecture_class, build_model, load_pretrained,
                                 register_architecture)

__all__ = [
    "ARCHITECTURES", "CONFIG_NAME", "WEIGHTS_NAME", "MambaBackbone", "MambaForSequenceClassification",
    "KmerProfileHead", "MambaLMHeadModel", "PooledBatchNorm", "PretrainedMixin", "ResidualBlock", "add_lm_head", "architecture_class",
    "build_model", "check_token_ids", "kmer_ids", "load_pretrained",
]


@register_architecture
class MambaLMHeadModel(nn.Module, PretrainedMixin, GenerationMixin):
    """Causal LM: (batch, L) ids -> (batch, L, vocab_size) logits; head tied to the embedding.
    ``generate(input_ids, max_new_tokens=..., cg=True)``: see ``mambaseq.generation.generate``."""

    config_class = MambaConfig
    shared_prefix = "backbone."

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        if cfg.bidirectional or cfg.rc_equivariant:
            raise ValueError("MambaLMHeadModel is a causal (next-token) LM; bidirectional / rc_equivariant "
                             "backbones see the future: use MambaForMaskedLM")
        self.cfg = cfg
        add_lm_head(self, cfg)

    def forward(self, input_ids: Tensor, cache: list[MambaCache] | None = None) -> Tensor:
        return self.lm_head(self.backbone(input_ids, cache))[..., : self.cfg.vocab_size]

    def step(self, input_ids: Tensor, cache: list[MambaCache]) -> Tensor:
        """input_ids (batch,) -> logits (batch, vocab_size)."""
        return self.lm_head(self.backbone.step(input_ids, cache))[..., : self.cfg.vocab_size]

    def allocate_inference_cache(self, batch_size: int, device=None, dtype=None,
                                 ssm_state_dtype=None) -> list[MambaCache]:
        return self.backbone.allocate_inference_cache(batch_size, device, dtype, ssm_state_dtype)


class PooledBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over pooled features (batch, d) that also trains on micro-batches of one to three windows
    (long contexts).

    With batch statistics, a batch of two maps every feature to exactly -1 or +1 (and one of one is
    undefined), so a model trained that way sees features unlike the running statistics it is evaluated
    with (measured: 2^16-base windows in batches of two, train loss 1.1, test accuracy 0.35 against 0.65 at
    2^14). Batches smaller than ``min_batch_stats`` (4) are therefore standardised by the running
    statistics, which they still update (mean from one window, variance from two or more)."""

    min_batch_stats = 4
    frozen = False  # True: always standardise by the running statistics, never update them (fixed scaler)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if self.frozen:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            False, 0.0, self.eps)
        if not self.training or n >= self.min_batch_stats:
            return super().forward(x)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                xd = x.detach().to(self.running_mean.dtype)
                self.running_mean.lerp_(xd.mean(0), m)
                if n > 1:
                    self.running_var.lerp_(xd.var(0, unbiased=True), m)
                self.num_batches_tracked += 1
        return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                        False, 0.0, self.eps)


class KmerProfileHead(nn.Module):
    """The "wide" part of a Wide & Deep classifier (Cheng et al. 2016): (batch, L) base ids -> (batch, num_labels)
    logits, linear in the window's standardised k-mer frequency profile.

    The profile counts the L overlapping k-mers (``kmer_ids``; one extra bin for k-mers holding N or starting
    before the window) divided by L; each of its 4^k + 1 frequencies is standardised over the batch
    (``PooledBatchNorm`` without affine: running statistics at evaluation), then a zero-initialised linear map.
    This is the k-mer logistic regression of the baselines, trained jointly with the network: a full-rank
    linear map on 4^k frequencies learns from few windows, where the same information reaching the head
    through a d_model-wide mean-pooled k-mer embedding is a rank-d_model factorisation that starts at a saddle
    (docs/apes.md has the measurements).

    ``standardize="fit"``: the frequencies are standardised by a fixed mean and variance, set once from a
    sample of training windows by ``fit_standardizer`` before training (the baselines' StandardScaler; kept
    in the norm's running statistics, so checkpoints carry it). Batch statistics of a few long windows are
    noise on 4^k features (the main job trains on 4 windows a step), and a model trained on them is evaluated
    on features standardised differently. ``"batch"``: batch statistics in training (running ones in eval).

    ``lr_scale``: the linear map trains at ``lr_scale`` x the run's learning rate (its own AdamW group). At long
    windows the standardised profile is nearly noise-free and the optimum weights are large: one pass of 150
    steps x 8 windows of 2^16 bases takes this head alone to test 0.780 at lr 2e-3 and 0.946 at 2e-2, while at
    1,024 bases (512 windows a step) it stays at 0.28-0.29 (bench/apes_wide_head.py; docs/apes.md)."""

    def __init__(self, k: int, num_labels: int, standardize: str = "batch", lr_scale: float = 1.0) -> None:
        super().__init__()
        self.k = k
        self.standardize = standardize
        self.norm = PooledBatchNorm(4**k + 1, affine=False)
        self.norm.frozen = standardize == "fit"
        self._fitted = False  # set by the first forward that finds statistics (fitted, or loaded)
        self.linear = nn.Linear(4**k + 1, num_labels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        if lr_scale != 1.0:  # its own AdamW group (training.optim.param_groups): lr x lr_scale
            for p in self.linear.parameters():
                p._lr_scale = float(lr_scale)

    @torch.no_grad()
    def fit_standardizer(self, input_ids: Tensor, chunk: int = 64) -> None:
        """Set the fixed standardisation (``standardize="fit"``) to the per-frequency mean and variance over the
        (n >= 2, L) training windows ``input_ids`` (population variance; a frequency constant over the sample
        gets variance 1, as sklearn's StandardScaler). Profiles are summed in chunks of ``chunk`` windows, so
        memory is O(4^k), not O(n 4^k). Raises ValueError for fewer than two windows."""
        n = int(input_ids.shape[0]) if input_ids.dim() == 2 else 0
        if n < 2:
            raise ValueError(f"fit_standardizer needs (n >= 2, L) windows, got {tuple(input_ids.shape)}")
        dev = self.linear.weight.device
        s = torch.zeros(4**self.k + 1, dtype=torch.float64, device=dev)
        ss = torch.zeros_like(s)
        for i in range(0, n, chunk):
            p = self.profile(input_ids[i:i + chunk].to(dev)).double()
            s += p.sum(0)
            ss += (p * p).sum(0)
        mean = s / n
        var = (ss / n - mean * mean).clamp_min(0.0)
        var = torch.where(var > 0, var, torch.ones_like(var))
        self.norm.running_mean.copy_(mean.to(self.norm.running_mean.dtype))
        self.norm.running_var.copy_(var.to(self.norm.running_var.dtype))
        self.norm.num_batches_tracked.fill_(1)

    def profile(self, input_ids: Tensor) -> Tensor:
        """(batch, L) ids -> (batch, 4^k + 1) float32 k-mer frequencies (rows sum to 1)."""
        ids = kmer_ids(input_ids, self.k)
        counts = torch.zeros(ids.shape[0], 4**self.k + 1, device=ids.device, dtype=torch.float32)
        counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float32))
        return counts / ids.shape[1]

    def forward(self, input_ids: Tensor) -> Tensor:
        if self.standardize == "fit" and not self._fitted:  # checked once: no device sync per forward
            if int(self.norm.num_batches_tracked) == 0:
                raise RuntimeError("KmerProfileHead(standardize='fit') has no standardisation yet: call "
                                   "fit_standardizer(train_windows) (model.wide) before training or use "
                                   "wide_standardize='batch'")
            self._fitted = True
        return self.linear(self.norm(self.profile(input_ids)))


@register_architecture
class MambaForSequenceClassification(nn.Module, PretrainedMixin):
    """(batch, L) ids -> (batch, num_labels) logits from the mean (``pooling="mean"``, default) or the last
    position (``"last"``) of the final-norm hidden states.

    The head starts at zero, so the first loss is exactly ln(num_labels) and no random projection of the
    pooled features has to be unlearned. Mean pooling sees every position; a causal model's last position
    only remembers the last ~1/dt_min tokens.

    ``cfg.rc_equivariant``: pools both strands (``mambaseq.modules.rc.rc_pool``): RC-invariant logits.
    ``from_pretrained(plain_ckpt, rc_equivariant=True)`` is post-hoc conjoining of a plain model.
    ``cfg.wide_kmer_size = k > 0``: adds the logits of a ``KmerProfileHead`` (Wide & Deep); with
    ``cfg.wide_standardize="fit"`` call ``model.wide.fit_standardizer(train_windows)`` before training."""

    config_class = MambaConfig
    shared_prefix = "backbone."

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        if cfg.num_labels < 1:
            raise ValueError("MambaForSequenceClassification needs cfg.num_labels >= 1")
        self.cfg = cfg
        self.backbone = MambaBackbone(cfg)
        # standardise each pooled feature over the batch (running statistics at evaluation), as a k-mer
        # logistic regression standardises its frequencies: pooled features of different windows differ by a
        # small fraction of their common mean, which a plain linear head needs thousands of steps to resolve
        self.pool_norm = PooledBatchNorm(cfg.d_model) if cfg.classifier_norm == "batch" else nn.Identity()
        self.head = nn.Linear(cfg.d_model, cfg.num_labels)
        init_weights(self, cfg.n_layer)
        nn.init.zeros_(self.head.weight)
        self.wide = (KmerProfileHead(cfg.wide_kmer_size, cfg.num_labels, cfg.wide_standardize, cfg.wide_lr_scale)
                     if cfg.wide_kmer_size else None)

    def forward(self, input_ids: Tensor) -> Tensor:
        h = self.backbone(input_ids)  # (b, L, d), (b, L, 2d) if rc_equivariant
        pooled = rc.rc_pool(h, self.cfg.pooling) if self.cfg.rc_equivariant else rc.pool(h, self.cfg.pooling)
        logits = self.head(self.pool_norm(pooled.float()))
        return logits if self.wide is None else logits + self.wide(input_ids)
