"""Weight initialisation shared by every model (LM, classifier, masked LM, SaShiMi)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def init_weights(model: nn.Module, n_layer: int) -> None:
    """GPT-2 style init as in the Mamba paper's LM, in place: N(0, 0.02) embeddings, zero biases (except those
    tagged ``_no_reinit``, e.g. dt_proj's), and every ``out_proj`` re-drawn (Kaiming uniform, a = sqrt(5)) then
    divided by sqrt(n_layer), so the residual stream's variance does not grow with depth. ``n_layer``: the
    number of residual blocks on the stream."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.bias is not None and not getattr(m.bias, "_no_reinit", False):
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        if name.endswith("out_proj"):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
            with torch.no_grad():
                m.weight /= math.sqrt(n_layer)
