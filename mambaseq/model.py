"""Mamba models: residual block, backbone, LM head (tied embeddings), sequence classifier, checkpoints.

Checkpoints describe themselves: ``save_pretrained(dir)`` writes ``config.json`` (the ``MambaConfig`` plus
``architecture``) and ``model.safetensors``; ``from_pretrained(dir)`` rebuilds the same model bit-exactly.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import save_model
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mambaseq.config import MambaConfig
from mambaseq.fileio import load_weights, read_json
from mambaseq.generation import GenerationMixin
from mambaseq.hf_compat import checkpoint_format, load_foreign
from mambaseq.kernels import add_rms_norm
from mambaseq.modules import rc
from mambaseq.modules.bimamba import BiMamba
from mambaseq.modules.mamba import Mamba, MambaCache

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _norm(cfg: MambaConfig, d: int) -> nn.Module:
    return nn.RMSNorm(d, eps=cfg.norm_eps) if cfg.norm == "rms" else nn.LayerNorm(d, eps=cfg.norm_eps)


class ResidualBlock(nn.Module):
    """Pre-norm residual block: x + Mamba(norm(x)); (batch, L, d_model) -> same."""

    def __init__(self, cfg: MambaConfig, layer_idx: int | None = None, d_model: int | None = None) -> None:
        super().__init__()
        d = d_model or cfg.d_model
        self.norm = _norm(cfg, d)
        self.mixer = (BiMamba if cfg.bidirectional else Mamba)(
            d,
            d_state=cfg.d_state,
            d_conv=cfg.d_conv,
            expand=cfg.expand,
            dt_rank=cfg.dt_rank if d_model is None else "auto",
            dt_min=cfg.dt_min,
            dt_max=cfg.dt_max,
            dt_init_floor=cfg.dt_init_floor,
            conv_bias=cfg.conv_bias,
            bias=cfg.bias,
            layer_idx=layer_idx,
            complex=cfg.complex,
            backend=cfg.backend,
        )

    def forward(self, x: Tensor, cache: MambaCache | None = None) -> Tensor:
        return x + self.mixer(self.norm(x), cache=cache)

    def step(self, x: Tensor, cache: MambaCache) -> Tensor:
        """x (batch, d_model) -> (batch, d_model)."""
        return x + self.mixer.step(self.norm(x), cache)

    def allocate_cache(self, batch_size: int, device=None, dtype=None) -> MambaCache:
        return self.mixer.allocate_cache(batch_size, device, dtype)


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
        self.norm_f = _norm(cfg, cfg.d_model)

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
        for layer, c in zip(self.layers, cache):
            normed, res = self._add_norm(h, res, layer.norm)
            h = layer.mixer.step(normed, c)
        return self._add_norm(h, res, self.norm_f)[0]

    def _add_norm(self, x: Tensor, residual: Tensor | None, norm: nn.Module) -> tuple[Tensor, Tensor]:
        if isinstance(norm, nn.RMSNorm):
            return add_rms_norm(x, residual, norm.weight, norm.eps, backend=self.cfg.backend)
        res = x if residual is None else residual + x
        return norm(res), res

    def allocate_inference_cache(self, batch_size: int, device=None, dtype=None) -> list[MambaCache]:
        if self.cfg.rc_equivariant:
            raise ValueError("an rc_equivariant backbone reads both strands whole: it cannot decode token by token")
        return [layer.allocate_cache(batch_size, device, dtype) for layer in self.layers]


def _init_weights(model: nn.Module, n_layer: int) -> None:
    """GPT-2 style init as in the Mamba paper's LM: N(0, 0.02) embeddings, zero biases, and out_proj
    rescaled by 1/sqrt(n_layer) so the residual stream's variance does not grow with depth."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.bias is not None and not getattr(m.bias, "_no_reinit", False):
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        if name.endswith("out_proj"):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
            with torch.no_grad():
                m.weight /= math.sqrt(n_layer)


class PretrainedMixin:
    """save_pretrained / from_pretrained with config.json + model.safetensors, written atomically."""

    cfg: MambaConfig

    def save_pretrained(self, directory: str | os.PathLike, **meta: Any) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg_tmp = d / f".{CONFIG_NAME}.tmp{os.getpid()}"
        w_fd, w_tmp = tempfile.mkstemp(dir=d, prefix=".model.", suffix=".tmp")
        os.close(w_fd)
        try:
            save_model(self, w_tmp)  # handles the tied embedding / head weights
            self.cfg.save(cfg_tmp, architecture=type(self).__name__, **meta)
            os.replace(w_tmp, d / WEIGHTS_NAME)
            os.replace(cfg_tmp, d / CONFIG_NAME)
        finally:
            for p in (Path(w_tmp), cfg_tmp):
                p.unlink(missing_ok=True)
        return d

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu", **overrides: Any):
        """Load a checkpoint directory. ``overrides`` change config fields (e.g. ``num_labels=5`` to start a
        classifier from a pretrained LM: the backbone is loaded, the new head is freshly initialised).
        mamba-ssm and transformers Mamba folders are recognised too (``mambaseq.hf_compat``)."""
        d = Path(directory)
        fmt = checkpoint_format(d)
        if fmt != "mambaseq":
            return load_foreign(cls, d, fmt, map_location, **overrides)
        cfg, meta = MambaConfig.load(d / CONFIG_NAME)
        model = cls(cfg.updated(**overrides))
        wpath = d / WEIGHTS_NAME
        same = meta.get("architecture") == cls.__name__
        missing, unexpected = load_weights(model, wpath, strict=same, device=map_location)  # errors name wpath
        if not same:  # cross-architecture (LM -> classifier): every backbone tensor must have been loaded
            bad = [k for k in missing if k.startswith("backbone.")]
            if bad:
                raise ValueError(f"{wpath}: checkpoint lacks backbone weights {bad[:5]}")
        return model


def add_lm_head(model: nn.Module, cfg: MambaConfig) -> None:
    """Give ``model`` a backbone and an LM head over the padded vocabulary (tied to the embedding when
    ``cfg.tie_embeddings``), initialised as in the paper (``_init_weights``)."""
    model.backbone = MambaBackbone(cfg)
    model.lm_head = nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False)
    _init_weights(model, cfg.n_layer)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.backbone.embedding.weight


class MambaLMHeadModel(nn.Module, PretrainedMixin, GenerationMixin):
    """Causal LM: (batch, L) ids -> (batch, L, vocab_size) logits; head tied to the embedding.
    ``generate(input_ids, max_new_tokens=..., cg=True)``: see ``mambaseq.generation.generate``."""

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
    """BatchNorm1d over pooled features (batch, d) that also trains on micro-batches of one to three windows
    (long contexts).

    With batch statistics, a batch of two maps every feature to exactly -1 or +1 (and one of one is
    undefined), so a model trained that way sees features unlike the running statistics it is evaluated
    with (measured: 2^16-base windows in batches of two, train loss 1.1, test accuracy 0.35 against 0.65 at
    2^14). Batches smaller than ``min_batch_stats`` (4) are therefore standardised by the running
    statistics, which they still update (mean from one window, variance from two or more)."""

    min_batch_stats = 4

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
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
    (docs/apes.md has the measurements)."""

    def __init__(self, k: int, num_labels: int) -> None:
        super().__init__()
        self.k = k
        self.norm = PooledBatchNorm(4**k + 1, affine=False)
        self.linear = nn.Linear(4**k + 1, num_labels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def profile(self, input_ids: Tensor) -> Tensor:
        """(batch, L) ids -> (batch, 4^k + 1) float32 k-mer frequencies (rows sum to 1)."""
        ids = kmer_ids(input_ids, self.k)
        counts = torch.zeros(ids.shape[0], 4**self.k + 1, device=ids.device, dtype=torch.float32)
        counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float32))
        return counts / ids.shape[1]

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.linear(self.norm(self.profile(input_ids)))


class MambaForSequenceClassification(nn.Module, PretrainedMixin):
    """(batch, L) ids -> (batch, num_labels) logits from the mean (``pooling="mean"``, default) or the last
    position (``"last"``) of the final-norm hidden states.

    The head starts at zero, so the first loss is exactly ln(num_labels) and no random projection of the
    pooled features has to be unlearned. Mean pooling sees every position; a causal model's last position
    only remembers the last ~1/dt_min tokens.

    ``cfg.rc_equivariant``: pools both strands (``mambaseq.modules.rc.rc_pool``): RC-invariant logits.
    ``from_pretrained(plain_ckpt, rc_equivariant=True)`` is post-hoc conjoining of a plain model.
    ``cfg.wide_kmer_size = k > 0``: adds the logits of a ``KmerProfileHead`` (Wide & Deep)."""

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
        _init_weights(self, cfg.n_layer)
        nn.init.zeros_(self.head.weight)
        self.wide = KmerProfileHead(cfg.wide_kmer_size, cfg.num_labels) if cfg.wide_kmer_size else None

    def forward(self, input_ids: Tensor) -> Tensor:
        h = self.backbone(input_ids)  # (b, L, d), (b, L, 2d) if rc_equivariant
        pooled = rc.rc_pool(h, self.cfg.pooling) if self.cfg.rc_equivariant else rc.pool(h, self.cfg.pooling)
        logits = self.head(self.pool_norm(pooled.float()))
        return logits if self.wide is None else logits + self.wide(input_ids)


ARCHITECTURES = {c.__name__: c for c in (MambaLMHeadModel, MambaForSequenceClassification)}


def load_pretrained(directory: str | os.PathLike, map_location: str = "cpu", **overrides: Any) -> nn.Module:
    """Load any mambaseq checkpoint directory as the architecture recorded in its config.json."""
    path = Path(directory) / CONFIG_NAME
    try:
        arch = read_json(path).get("architecture")  # a damaged file: CorruptFileError naming it
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no config.json (expected a save_pretrained directory)") from None
    if arch is None and checkpoint_format(directory) != "mambaseq":
        arch = MambaLMHeadModel.__name__  # a mamba-ssm or transformers causal LM
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path}: unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch].from_pretrained(directory, map_location=map_location, **overrides)
