"""Reverse-complement (RC) parameter sharing (Schiff et al. 2024, "Caduceus", arXiv:2402.03234, Sec. 3.2).

Caduceus-PS splits the hidden channels in two halves and wraps the embedding, every mixer and norm so that
``hidden(RC(x)) = RC_h(hidden(x))`` with ``RC_h(h) = h.flip(L, channels)``. Written out, its RC-equivariant
embedding is ``[E(x), flip_c(E(comp(x)))]`` and every later layer acts on each half separately with the same
weights (the second half read in reverse-complement coordinates). So the whole backbone is the ordinary
backbone applied to both strands with one set of weights:

    h_fwd = backbone(x),   h_rc = backbone(RC(x)),   hidden = [h_fwd, flip_{L,c}(h_rc)]   (batch, L, 2d)

which is how mambaseq computes it (one call on the batch [x; RC(x)]). Exchanging the strands exchanges
``h_fwd`` and ``h_rc``: equivariance holds by construction, up to float rounding of a batched call.

Heads:
* masked LM (Caduceus' RCPS LM head): logits[i] = W h_fwd[i] + P W h_rc[L-1-i], P the complement
  permutation of the vocabulary, so ``logits(RC(x)) = P flip_L(logits(x))``;
* classifier: pooled = (pool(h_fwd) + pool(h_rc)) / 2, RC-invariant for "mean" and "last" pooling (the last
  position of each strand). Loading a plain model's weights with ``rc_equivariant=True`` is therefore
  exactly post-hoc conjoining: its logits become the average over a sequence and its reverse complement.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mambaseq.data.dna import complement, reverse_complement


def both_strands(input_ids: Tensor) -> Tensor:
    """(batch, L) ids -> (2 * batch, L): the sequences, then their reverse complements."""
    return torch.cat([input_ids, reverse_complement(input_ids)])


def merge_strands(h: Tensor) -> Tensor:
    """Backbone output on ``both_strands`` (2 * batch, L, d) -> channel-split hidden (batch, L, 2d)."""
    h_fwd, h_rc = h.chunk(2, dim=0)
    return torch.cat([h_fwd, rc_hidden(h_rc)], dim=-1)


def split_strands(hidden: Tensor) -> tuple[Tensor, Tensor]:
    """Channel-split hidden (batch, L, 2d) -> (h_fwd, h_rc), each (batch, L, d), h_rc in RC coordinates."""
    d = hidden.shape[-1] // 2
    return hidden[..., :d], rc_hidden(hidden[..., d:])


def rc_hidden(h: Tensor) -> Tensor:
    """The reverse complement acting on hidden states (..., L, C): reverse positions and channels."""
    return h.flip(-2, -1)


def rc_lm_logits(hidden: Tensor, weight: Tensor) -> Tensor:
    """RC-equivariant LM head: hidden (batch, L, 2d), weight (V, d) -> logits (batch, L, V).

    ``logits = h_fwd W^T + flip_L(h_rc (P W)^T)`` with P the complement permutation of the V token ids."""
    h_fwd, h_rc = split_strands(hidden)
    perm = complement(torch.arange(weight.shape[0], device=weight.device))
    return F.linear(h_fwd, weight) + F.linear(h_rc, weight[perm]).flip(1)


def pool(h: Tensor, pooling: str) -> Tensor:
    """(batch, L, d) -> (batch, d): the last position ("last") or the mean over positions ("mean")."""
    return h[:, -1] if pooling == "last" else h.mean(dim=1)


def rc_pool(hidden: Tensor, pooling: str) -> Tensor:
    """RC-invariant pooling of channel-split hidden (batch, L, 2d) -> (batch, d): the mean of both strands'."""
    h_fwd, h_rc = split_strands(hidden)
    return 0.5 * (pool(h_fwd, pooling) + pool(h_rc, pooling))
