"""The residual Mamba block every backbone is built of, and its norm.

    ResidualBlock(cfg, layer_idx, d_model):  x (batch, L, d_model) -> x + Mixer(Norm(x))

``cfg`` is any ``MambaBlockConfig`` (``MambaConfig``, ``SaShiMiConfig``): every block field reaches the mixer
(``MambaBlockConfig.mamba_kwargs``) or the norm, so a backbone cannot drop one.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from mambaseq.config import MambaBlockConfig

from .bimamba import BiMamba
from .mamba import Mamba, MambaCache


def norm_layer(cfg: MambaBlockConfig, d: int) -> nn.Module:
    """The block's pre-norm over a width-``d`` last axis: ``nn.RMSNorm`` (``cfg.norm="rms"``) or
    ``nn.LayerNorm`` (``"layer"``), epsilon ``cfg.norm_eps``. Also every backbone's final norm."""
    return nn.RMSNorm(d, eps=cfg.norm_eps) if cfg.norm == "rms" else nn.LayerNorm(d, eps=cfg.norm_eps)


class ResidualBlock(nn.Module):
    """Pre-norm residual block: x + Mamba(norm(x)); (batch, L, d_model) -> same.

    ``d_model`` defaults to ``cfg.d_model`` (``MambaConfig``); a ``cfg`` with a ``bidirectional=True`` field
    (``MambaConfig``) gets a ``BiMamba`` mixer, any other a causal ``Mamba``."""

    def __init__(self, cfg: MambaBlockConfig, layer_idx: int | None = None, d_model: int | None = None) -> None:
        super().__init__()
        d = d_model or cfg.d_model
        self.norm = norm_layer(cfg, d)
        mixer = BiMamba if getattr(cfg, "bidirectional", False) else Mamba
        self.mixer = mixer(d, layer_idx=layer_idx, **cfg.mamba_kwargs())

    def forward(self, x: Tensor, cache: MambaCache | None = None) -> Tensor:
        return x + self.mixer(self.norm(x), cache=cache)

    def step(self, x: Tensor, cache: MambaCache) -> Tensor:
        """x (batch, d_model) -> (batch, d_model)."""
        return x + self.mixer.step(self.norm(x), cache)

    def allocate_cache(self, batch_size: int, device=None, dtype=None, **kwargs) -> MambaCache:
        return self.mixer.allocate_cache(batch_size, device, dtype, **kwargs)
