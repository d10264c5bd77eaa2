"""Bidirectional Mamba (BiMamba; Schiff et al. 2024, "Caduceus", arXiv:2402.03234, Sec. 3.1).

    y = M_fwd(x) + flip(M_rev(flip(x)))        flip: reversal along the sequence

``M_rev`` shares ``in_proj`` and ``out_proj`` with ``M_fwd`` (the paper's weight tying, so the second
direction adds only the conv, x_proj, dt_proj, A and D of each layer); each direction is an unchanged
``Mamba`` block, so both scan backends (reference, Triton) serve both directions. Costs two scans per
layer. Not causal: there is no recurrent step.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from torch import Tensor

from .mamba import Mamba, MambaCache


class BiMamba(nn.Module):
    """(batch, L, d_model) -> (batch, L, d_model): a forward and a reversed Mamba, outputs added.

    Takes ``Mamba``'s arguments. Parameters: ``mamba_fwd.*`` and ``mamba_rev.*`` (Caduceus' names);
    ``mamba_rev.in_proj`` / ``mamba_rev.out_proj`` are the very tensors of ``mamba_fwd``.
    """

    def __init__(self, d_model: int, **mamba_kwargs: Any) -> None:
        super().__init__()
        self.d_model = d_model
        self.mamba_fwd = Mamba(d_model, **mamba_kwargs)
        self.mamba_rev = Mamba(d_model, **mamba_kwargs)
        for proj in ("in_proj", "out_proj"):
            fwd, rev = getattr(self.mamba_fwd, proj), getattr(self.mamba_rev, proj)
            rev.weight = fwd.weight
            if fwd.bias is not None:
                rev.bias = fwd.bias

    def forward(self, hidden_states: Tensor, cache: MambaCache | None = None) -> Tensor:
        """hidden_states (batch, L, d_model) -> (batch, L, d_model); every output sees the whole sequence.

        Raises ValueError if given a ``cache`` (a bidirectional block has no recurrent form)."""
        if cache is not None:
            raise ValueError("BiMamba reads the whole sequence in both directions: it has no recurrent cache")
        fwd = self.mamba_fwd(hidden_states)
        rev = self.mamba_rev(hidden_states.flip(1)).flip(1)
        return fwd + rev

    def step(self, hidden_states: Tensor, cache: MambaCache) -> Tensor:
        raise ValueError("BiMamba is not causal: it cannot decode one token at a time")

    def allocate_cache(self, batch_size: int, device=None, dtype=None, **kwargs) -> MambaCache:
        raise ValueError("BiMamba is not causal: it has no recurrent inference cache")
