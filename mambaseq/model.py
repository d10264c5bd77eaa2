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
    "MambaLMHeadModel", "PooledBatchNorm", "PretrainedMixin", "ResidualBlock", "add_lm_head", "architecture_class",
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

    def allocate_inference_cache(self, batch_size: int, device=None, dtype=None) -> list[MambaCache]:
        return self.backbone.allocate_inference_cache(batch_size, device, dtype)


class PooledBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over pooled features (batch, d) that also trains on a micro-batch of one window (long
    contexts): such a batch is standardised by the running statistics and does not update them."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            False, 0.0, self.eps)
        return super().forward(x)


@register_architecture
class MambaForSequenceClassification(nn.Module, PretrainedMixin):
    """(batch, L) ids -> (batch, num_labels) logits from the mean (``pooling="mean"``, default) or the last
    position (``"last"``) of the final-norm hidden states.

    The head starts at zero, so the first loss is exactly ln(num_labels) and no random projection of the
    pooled features has to be unlearned. Mean pooling sees every position; a causal model's last position
    only remembers the last ~1/dt_min tokens.

    ``cfg.rc_equivariant``: pools both strands (``mambaseq.modules.rc.rc_pool``): RC-invariant logits.
    ``from_pretrained(plain_ckpt, rc_equivariant=True)`` is post-hoc conjoining of a plain model."""

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

    def forward(self, input_ids: Tensor) -> Tensor:
        h = self.backbone(input_ids)  # (b, L, d), (b, L, 2d) if rc_equivariant
        pooled = rc.rc_pool(h, self.cfg.pooling) if self.cfg.rc_equivariant else rc.pool(h, self.cfg.pooling)
        return self.head(self.pool_norm(pooled.float()))
