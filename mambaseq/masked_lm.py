"""Masked language model (BERT-style pretraining of bidirectional / RC-equivariant DNA backbones, as in
Caduceus, Schiff et al. 2024): (batch, L) ids with some positions [MASK]ed -> logits at every position.

Training pairs come from ``mambaseq.training.mlm.mask_tokens`` (15% of positions, 80/10/10 rule); the loss is
``mambaseq.training.mlm.mlm_loss``. A checkpoint starts a classifier like an LM checkpoint does:
``MambaForSequenceClassification.from_pretrained(mlm_dir, num_labels=5)``.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from mambaseq.config import MambaConfig
from mambaseq.modules import rc
from mambaseq.modules.backbone import add_lm_head
from mambaseq.pretrained import PretrainedMixin, register_architecture


@register_architecture
class MambaForMaskedLM(nn.Module, PretrainedMixin):
    """(batch, L) ids -> (batch, L, vocab_size) logits for every position; head tied to the embedding.

    Any backbone (causal, ``bidirectional``, ``rc_equivariant``); with ``rc_equivariant`` the head is
    Caduceus' RC-equivariant LM head, so ``logits(RC(x)) = P flip_L(logits(x))`` (P: complement of the
    vocabulary; ``mambaseq.modules.rc.rc_lm_logits``)."""

    config_class = MambaConfig
    shared_prefix = "backbone."

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        add_lm_head(self, cfg)

    def forward(self, input_ids: Tensor) -> Tensor:
        h = self.backbone(input_ids)
        logits = rc.rc_lm_logits(h, self.lm_head.weight) if self.cfg.rc_equivariant else self.lm_head(h)
        return logits[..., : self.cfg.vocab_size]
