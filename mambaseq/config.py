"""Model configuration: one typed dataclass with named sizes (``MambaConfig.from_name("debug")``)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Named sizes. "debug" exists so CI can train for real in seconds.
SIZES: dict[str, dict[str, int]] = {
    "debug": dict(d_model=16, n_layer=2, d_state=4),
    "tiny": dict(d_model=64, n_layer=4, d_state=16),
    "small": dict(d_model=128, n_layer=8, d_state=16),
    "base": dict(d_model=256, n_layer=8, d_state=16),
    "medium": dict(d_model=512, n_layer=12, d_state=16),
    "large": dict(d_model=768, n_layer=24, d_state=16),
}


@dataclass
class MambaConfig:
    """Sizes and options of a Mamba backbone and its heads.

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
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False
    complex: bool = False
    norm: str = "rms"  # "rms" | "layer"
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    pad_vocab_size_multiple: int = 8
    checkpoint_activations: bool = False
    backend: str = "auto"  # kernels: auto | triton | reference
    num_labels: int = 0  # > 0 for sequence classification
    pooling: str = "last"  # "last" | "mean"
    bidirectional: bool = False  # BiMamba mixers (Caduceus): not causal
    rc_equivariant: bool = False  # RC parameter sharing (Caduceus-PS): both strands, shared weights
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, saved with the checkpoint

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"MambaConfig.{name} must be a positive int, got {v!r}")
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        if not isinstance(self.dt_rank, int) or self.dt_rank < 1:
            raise ValueError(f"MambaConfig.dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}")
        if self.norm not in ("rms", "layer"):
            raise ValueError(f"MambaConfig.norm must be 'rms' or 'layer', got {self.norm!r}")
        if self.pooling not in ("last", "mean"):
            raise ValueError(f"MambaConfig.pooling must be 'last' or 'mean', got {self.pooling!r}")
        if self.rc_equivariant and self.vocab_size < 4:
            raise ValueError(f"MambaConfig.rc_equivariant needs the DNA vocabulary (ids 0-3 = A, C, G, T, "
                             f"mambaseq.data.dna.VOCAB); got vocab_size={self.vocab_size}")
        if self.backend not in ("auto", "triton", "reference"):
            raise ValueError(f"MambaConfig.backend must be auto|triton|reference, got {self.backend!r}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"MambaConfig needs 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")

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

    def updated(self, **overrides: Any) -> "MambaConfig":
        """A validated copy with ``overrides`` set. Raises ValueError naming a field that does not exist."""
        known = {f.name for f in dataclasses.fields(self)}
        for k in overrides:
            if k not in known:
                raise ValueError(f"from_pretrained: unknown config field {k!r}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MambaConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown MambaConfig fields {sorted(unknown)}")
        return cls(**d)

    def save(self, path: str | Path, **meta: Any) -> None:
        Path(path).write_text(json.dumps({**meta, **self.to_dict()}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> tuple["MambaConfig", dict[str, Any]]:
        """Returns (config, metadata) from a config.json; metadata are the non-config keys."""
        try:
            d = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no config.json (expected a save_pretrained directory)") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        known = {f.name for f in dataclasses.fields(cls)}
        meta = {k: v for k, v in d.items() if k not in known}
        return cls.from_dict({k: v for k, v in d.items() if k in known}), meta
