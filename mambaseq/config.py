"""Model configuration: typed dataclasses, read from and written to a checkpoint's config.json.

* ``MambaBlockConfig``: the options of one residual Mamba block, declared once;
* ``MambaConfig(MambaBlockConfig)``: the Mamba backbone and its heads, with named sizes
  (``MambaConfig.from_name("debug")``); ``SaShiMiConfig(MambaBlockConfig)`` lives beside its model in
  ``mambaseq.sashimi``;
* ``ConfigFile``: the config.json I/O both share; ``CONFIG_NAME`` / ``WEIGHTS_NAME``: a checkpoint folder's files.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mambaseq.fileio import missing_config
from mambaseq.kernels.causal_conv1d import WIDTHS as CONV_WIDTHS

# Named sizes. "debug" exists so CI can train for real in seconds.
SIZES: dict[str, dict[str, int]] = {
    "debug": dict(d_model=16, n_layer=2, d_state=4),
    "tiny": dict(d_model=64, n_layer=4, d_state=16),
    "small": dict(d_model=128, n_layer=8, d_state=16),
    "base": dict(d_model=256, n_layer=8, d_state=16),
    "medium": dict(d_model=512, n_layer=12, d_state=16),
    "large": dict(d_model=768, n_layer=24, d_state=16),
}


# A checkpoint folder (``PretrainedMixin.save_pretrained``): the config with its metadata, and the weights.
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# config.json keys that are not config fields but are written by save_pretrained
METADATA_KEYS = ("architecture",)
D_CONV_RANGE = CONV_WIDTHS  # widths the causal-conv kernels support (kernels/causal_conv1d.py)


def _unknown_keys_message(cls_name: str, unknown: set[str], known: set[str]) -> str:
    hints = [f"{m[0]!r} for {k!r}" for k in sorted(unknown) if (m := difflib.get_close_matches(k, known, 1))]
    return (f"unknown {cls_name} field(s) {sorted(unknown)}" + (f" (did you mean {', '.join(hints)}?)" if hints else "")
            + f"; fields are {sorted(known)}")


def _check_positive_ints(cfg: Any, names: tuple[str, ...]) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{type(cfg).__name__}.{name} must be a positive int, got {v!r}")


class ConfigFile:
    """config.json I/O shared by every model config dataclass (``MambaConfig``, ``SaShiMiConfig``).

    The file is one flat JSON object: the dataclass fields plus the metadata keys (``METADATA_KEYS``)."""

    def updated(self, **overrides: Any):
        """A validated copy with ``overrides`` set. Raises ValueError naming a field that does not exist (with
        the closest field name), or a value the fields reject."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(_unknown_keys_message(type(self).__name__, unknown, known))
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Raises ValueError naming unknown keys (with the closest field name) or a value a field rejects."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(_unknown_keys_message(cls.__name__, unknown, known))
        return cls(**d)

    def save(self, path: str | Path, **meta: Any) -> None:
        """Write config.json: the fields plus metadata ``meta`` (keys among ``METADATA_KEYS``)."""
        if not set(meta) <= set(METADATA_KEYS):
            raise ValueError(f"{type(self).__name__}.save: metadata keys must be among {METADATA_KEYS}, got "
                             f"{sorted(meta)}")
        Path(path).write_text(json.dumps({**meta, **self.to_dict()}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> tuple[Any, dict[str, Any]]:
        """Returns (config, metadata) from a config.json; metadata are the ``METADATA_KEYS``.

        Raises FileNotFoundError, or ValueError naming ``path`` and the problem: not valid JSON, a key that is
        neither a field nor metadata (e.g. ``n_layers`` for ``n_layer``, mamba-ssm's ``ssm_cfg``), or a value
        the fields reject."""
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise missing_config(path) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: corrupt or truncated config (not valid JSON: {e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
        meta = {k: v for k, v in d.items() if k in METADATA_KEYS}
        try:
            return cls.from_dict({k: v for k, v in d.items() if k not in METADATA_KEYS}), meta
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None


@dataclass
class MambaBlockConfig(ConfigFile):
    """Options of one residual Mamba block (pre-norm + ``Mamba`` mixer): the one place they are declared.

    Every backbone config inherits these fields (``MambaConfig``, ``SaShiMiConfig``) and passes all of them to
    its blocks (``mambaseq.modules.block.ResidualBlock``); the width ``d_model`` is the backbone's (SaShiMi's
    blocks are wider at coarser scales). ``dt_rank="auto"`` is ``ceil(width / 16)`` of each block."""

    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False
    complex: bool = False  # complex-valued SSM (S4D-Lin init), the paper's audio setting
    norm: str = "rms"  # "rms" | "layer"
    norm_eps: float = 1e-5
    backend: str = "auto"  # kernels: auto | triton | reference

    def __post_init__(self) -> None:
        """Raises ValueError naming ``<ConfigClass>.<field>`` for a value the block cannot take."""
        name_ = type(self).__name__
        _check_positive_ints(self, ("d_state", "d_conv", "expand"))
        if not D_CONV_RANGE[0] <= self.d_conv <= D_CONV_RANGE[1]:
            raise ValueError(f"{name_}.d_conv must be in {D_CONV_RANGE[0]}..{D_CONV_RANGE[1]} (the widths the "
                             f"causal-conv kernels support), got {self.d_conv}")
        for name in ("conv_bias", "bias", "complex"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name_}.{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("dt_min", "dt_max", "dt_init_floor", "norm_eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise ValueError(f"{name_}.{name} must be a positive finite number, got {v!r}")
        if self.dt_rank != "auto" and (not isinstance(self.dt_rank, int) or self.dt_rank < 1):
            raise ValueError(f"{name_}.dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}")
        if self.norm not in ("rms", "layer"):
            raise ValueError(f"{name_}.norm must be 'rms' or 'layer', got {self.norm!r}")
        if self.backend not in ("auto", "triton", "reference"):
            raise ValueError(f"{name_}.backend must be auto|triton|reference, got {self.backend!r}")
        if not self.dt_min <= self.dt_max:
            raise ValueError(f"{name_} needs 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")

    def mamba_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``mambaseq.modules.Mamba`` (all but the width and ``layer_idx``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(MambaBlockConfig)
                if f.name not in ("norm", "norm_eps")}


@dataclass
class MambaConfig(MambaBlockConfig):
    """Sizes and options of a Mamba backbone and its heads; the block options are ``MambaBlockConfig``'s.

    ``d_inner = expand * d_model``; ``dt_rank = ceil(d_model / 16)`` unless given. ``complex=True`` makes
    every SSM complex-valued (S4D-Lin init), the paper's audio setting.

    DNA options (Schiff et al. 2024, Caduceus; see ``mambaseq.modules.bimamba`` / ``mambaseq.modules.rc``):
    ``bidirectional=True`` makes every mixer a BiMamba (the sequence and its reversal through shared in/out
    projections, 2 scans per layer); ``rc_equivariant=True`` runs the backbone on both strands with shared
    weights (RC parameter sharing), so hidden states are (batch, L, 2 * d_model) and the classifier and
    masked-LM heads are reverse-complement invariant/equivariant by construction (2x compute, same
    parameters). Neither can be a causal (next-token) LM.
    """

    d_model: int = 128
    n_layer: int = 8
    vocab_size: int = 16
    tie_embeddings: bool = True
    pad_vocab_size_multiple: int = 8
    checkpoint_activations: bool = False
    num_labels: int = 0  # > 0 for sequence classification
    pooling: str = "mean"  # "mean" (every position, as HyenaDNA/Caduceus) | "last" (causal last token)
    classifier_norm: str = "batch"  # "batch": standardise pooled features (BatchNorm1d) | "none"
    kmer_size: int = 1  # k > 1: add an embedding of the (overlapping) k-mer ending at each position
    wide_kmer_size: int = 0  # k > 0: classifier adds a linear head on the window's k-mer profile (Wide & Deep)
    wide_standardize: str = "batch"  # the wide head's profile standardisation: "batch" statistics | "fit" (fixed,
    #                                  from a sample of training windows before training, as a StandardScaler)
    wide_lr_scale: float = 1.0  # the wide head's learning rate = train.lr x this (its AdamW parameter group)
    bidirectional: bool = False  # BiMamba mixers (Caduceus): not causal
    rc_equivariant: bool = False  # RC parameter sharing (Caduceus-PS): both strands, shared weights
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, saved with the checkpoint

    def __post_init__(self) -> None:
        _check_positive_ints(self, ("d_model", "n_layer", "vocab_size", "pad_vocab_size_multiple"))
        super().__post_init__()
        if not isinstance(self.num_labels, int) or isinstance(self.num_labels, bool) or self.num_labels < 0:
            raise ValueError(f"MambaConfig.num_labels must be an int >= 0, got {self.num_labels!r}")
        for name in ("tie_embeddings", "checkpoint_activations", "bidirectional", "rc_equivariant"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MambaConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"MambaConfig.extra must be a dict, got {type(self.extra).__name__}")
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        if self.pooling not in ("last", "mean"):
            raise ValueError(f"MambaConfig.pooling must be 'last' or 'mean', got {self.pooling!r}")
        if self.classifier_norm not in ("batch", "none"):
            raise ValueError(f"MambaConfig.classifier_norm must be 'batch' or 'none', got {self.classifier_norm!r}")
        if not isinstance(self.kmer_size, int) or isinstance(self.kmer_size, bool) or not 1 <= self.kmer_size <= 8:
            raise ValueError(f"MambaConfig.kmer_size must be an int in 1..8, got {self.kmer_size!r}")
        if (not isinstance(self.wide_kmer_size, int) or isinstance(self.wide_kmer_size, bool)
                or not 0 <= self.wide_kmer_size <= 8):
            raise ValueError(f"MambaConfig.wide_kmer_size must be an int in 0..8 (0: off), got {self.wide_kmer_size!r}")
        if self.wide_standardize not in ("batch", "fit"):
            raise ValueError(f"MambaConfig.wide_standardize must be 'batch' or 'fit', got {self.wide_standardize!r}")
        if (isinstance(self.wide_lr_scale, bool) or not isinstance(self.wide_lr_scale, (int, float))
                or not 0 < self.wide_lr_scale < float("inf")):
            raise ValueError(f"MambaConfig.wide_lr_scale must be a positive finite number, got {self.wide_lr_scale!r}")
        if self.wide_kmer_size and self.rc_equivariant:
            raise ValueError("MambaConfig.wide_kmer_size > 0 is not reverse-complement invariant; use 0 with "
                             "rc_equivariant=True")
        if self.kmer_size > 1 and self.rc_equivariant:
            raise ValueError("MambaConfig.kmer_size > 1 is not reverse-complement equivariant; use kmer_size=1 "
                             "with rc_equivariant=True")
        if self.rc_equivariant and self.vocab_size < 4:
            raise ValueError(f"MambaConfig.rc_equivariant needs the DNA vocabulary (ids 0-3 = A, C, G, T, "
                             f"mambaseq.data.dna.VOCAB); got vocab_size={self.vocab_size}")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return -(-self.vocab_size // m) * m

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "MambaConfig":
        if name not in SIZES:
            raise ValueError(f"unknown model size {name!r}; choose one of {sorted(SIZES)}")
        return cls(**{**SIZES[name], **overrides})
