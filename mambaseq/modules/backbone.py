"""The Mamba backbone shared by the LM, classifier and masked-LM heads, with its token-id inputs.

    MambaBackbone(cfg): (batch, L) ids -> embedding (+ k-mer embedding) -> n_layer ResidualBlocks -> norm
                        -> (batch, L, d_model), or (batch, L, 2 * d_model) with ``cfg.rc_equivariant``
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mambaseq.config import MambaConfig
from mambaseq.kernels import add_rms_norm, add_rms_norm_linear
from mambaseq.kernels.l2_prefetch import l2_prefetch_enabled, prefetch_l2, side_stream

from . import rc
from .block import ResidualBlock, norm_layer
from .init import init_weights
from .mamba import Mamba, MambaCache


def check_token_ids(input_ids: Tensor, vocab_size: int) -> None:
    """ValueError unless every id is in [0, vocab_size) (ids in the padded part of the embedding would be
    used silently, negative ones fail far from the cause). Skipped while a CUDA graph is being captured,
    which cannot read values back."""
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be integer token ids, got {input_ids.dtype}")
    if input_ids.numel() == 0 or (input_ids.is_cuda and torch.cuda.is_current_stream_capturing()):
        return
    lo, hi = (int(v) for v in torch.aminmax(input_ids))
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"input_ids must lie in [0, {vocab_size - 1}] (vocab_size={vocab_size}), got ids in "
                         f"[{lo}, {hi}]")


def kmer_ids(input_ids: Tensor, k: int) -> Tensor:
    """(batch, L) base ids (A, C, G, T = 0..3) -> (batch, L) int64 ids of the k-mer ending at each position,
    sum_i x[t - i] * 4^i in [0, 4^k); ``4^k`` where the k-mer would start before the sequence or holds an id
    that is not a base (N, specials). Overlapping k-mers as in DNABERT (Ji et al. 2021)."""
    x = input_ids.long()
    b, L = x.shape
    code = torch.zeros_like(x)
    bad = torch.zeros_like(x, dtype=torch.bool)
    for i in range(k):  # shift by i: the base i positions back
        xi = x[:, : L - i] if i else x
        pad = (i, 0)
        code = code + torch.nn.functional.pad(xi.clamp(max=3), pad) * 4**i
        bad |= torch.nn.functional.pad(xi > 3, pad, value=True) if i else xi > 3
    return code.masked_fill(bad, 4**k)


class MambaBackbone(nn.Module):
    """Embedding -> n_layer residual Mamba blocks -> final norm: (batch, L) ids -> (batch, L, d_model).

    ``cfg.rc_equivariant``: both strands through the same weights -> (batch, L, 2 * d_model), see
    ``mambaseq.modules.rc``."""

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        # k-mer tokens beside single bases (DNABERT-style, overlapping): a row per k-mer ending at each position
        self.kmer_embedding = nn.Embedding(4**cfg.kmer_size + 1, cfg.d_model) if cfg.kmer_size > 1 else None
        self.layers = nn.ModuleList(ResidualBlock(cfg, i) for i in range(cfg.n_layer))
        self.norm_f = norm_layer(cfg, cfg.d_model)

    def forward(self, input_ids: Tensor, cache: list[MambaCache] | None = None) -> Tensor:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
            raise ValueError(f"input_ids must be (batch, length) integer tokens; got {input_ids.dtype} "
                             f"{tuple(input_ids.shape)}")
        check_token_ids(input_ids, self.cfg.vocab_size)
        if self.cfg.rc_equivariant:
            input_ids = rc.both_strands(input_ids)
        h = self.embedding(input_ids.long())
        if self.kmer_embedding is not None:
            h = h + self.kmer_embedding(kmer_ids(input_ids, self.cfg.kmer_size))
        for i, layer in enumerate(self.layers):
            c = cache[i] if cache is not None else None
            if self.cfg.checkpoint_activations and self.training and c is None and torch.is_grad_enabled():
                h = checkpoint(layer, h, use_reentrant=False)
            else:
                h = layer(h, cache=c)
        h = self.norm_f(h)
        return rc.merge_strands(h) if self.cfg.rc_equivariant else h

    def step(self, input_ids: Tensor, cache: list[MambaCache]) -> Tensor:
        """input_ids (batch,) -> hidden (batch, d_model); updates ``cache`` in place.

        The same arithmetic as ``h = layer.step(h)`` per layer, with each residual add fused into the next
        norm (one kernel on the GPU for RMSNorm models)."""
        check_token_ids(input_ids, self.cfg.vocab_size)
        if self.kmer_embedding is not None:
            raise NotImplementedError("step() of a kmer_size > 1 backbone needs the last k - 1 tokens; decode with "
                                      "a kmer_size=1 model")
        h, res = self.embedding(input_ids.long()), None
        # With MAMBASEQ_L2_PREFETCH=1, while a CUDA graph is captured on sm_90+: a side branch per layer that
        # prefetches into L2 what the layer reads after its in_proj and the next layer's norm + in_proj
        # (kernels/l2_prefetch.py)
        pf = (side_stream(h.device) if h.is_cuda and torch.cuda.is_current_stream_capturing()
              and l2_prefetch_enabled(h.device) else None)
        for i, (layer, c) in enumerate(zip(self.layers, cache)):
            mixer = layer.mixer
            if pf is not None:
                prefetch_l2(self.step_prefetch_tensors(i, cache), pf)
            if isinstance(layer.norm, nn.RMSNorm) and isinstance(mixer, Mamba):  # norm + in_proj: one op
                xz, res = add_rms_norm_linear(h, res, layer.norm.weight, layer.norm.eps, mixer.in_proj.weight,
                                              mixer.in_proj.bias, backend=self.cfg.backend)
                h = mixer.step_xz(xz, c)
            else:
                normed, res = self._add_norm(h, res, layer.norm)
                h = mixer.step(normed, c)
        if pf is not None:
            torch.cuda.current_stream().wait_stream(pf)  # join the side branch before the capture ends
        return self._add_norm(h, res, self.norm_f)[0]

    def step_prefetch_tensors(self, i: int, cache: list[MambaCache]) -> list[Tensor | None]:
        """What layer ``i``'s decoding step reads after its in_proj, in order of use, then the next layer's
        norm and in_proj weights (after the last layer: the final norm and layer 0's, for the next token):
        the tensors ``step`` prefetches into L2 while layer ``i`` starts."""
        out: list[Tensor | None] = []
        mixer, c = self.layers[i].mixer, cache[i]
        if isinstance(mixer, Mamba):
            out += [c.conv_state, mixer.x_proj.weight, mixer.dt_proj.weight, mixer.A_log, c.ssm_state,
                    mixer.out_proj.weight]
        nxt = self.layers[i + 1] if i + 1 < len(self.layers) else self.layers[0]
        out += [getattr(self.norm_f if i + 1 == len(self.layers) else nxt.norm, "weight", None),
                getattr(getattr(nxt.mixer, "in_proj", None), "weight", None)]
        return out

    def _add_norm(self, x: Tensor, residual: Tensor | None, norm: nn.Module) -> tuple[Tensor, Tensor]:
        if isinstance(norm, nn.RMSNorm):
            return add_rms_norm(x, residual, norm.weight, norm.eps, backend=self.cfg.backend)
        res = x if residual is None else residual + x
        return norm(res), res

    def allocate_inference_cache(self, batch_size: int, device=None, dtype=None,
                                 ssm_state_dtype=None) -> list[MambaCache]:
        """One ``MambaCache`` per layer (see ``Mamba.allocate_cache`` for ``ssm_state_dtype``)."""
        if self.cfg.rc_equivariant:
            raise ValueError("an rc_equivariant backbone reads both strands whole: it cannot decode token by token")
        return [layer.allocate_cache(batch_size, device, dtype, ssm_state_dtype=ssm_state_dtype)
                for layer in self.layers]


def add_lm_head(model: nn.Module, cfg: MambaConfig) -> None:
    """Give ``model`` a backbone and an LM head over the padded vocabulary (tied to the embedding when
    ``cfg.tie_embeddings``), initialised as in the paper (``init_weights``)."""
    model.backbone = MambaBackbone(cfg)
    model.lm_head = nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False)
    init_weights(model, cfg.n_layer)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.backbone.embedding.weight
