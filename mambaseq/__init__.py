"""mambaseq: Mamba selective state space models for genomics and audio."""

from mambaseq.config import MambaConfig
from mambaseq.model import (
    MambaBackbone,
    MambaForSequenceClassification,
    MambaLMHeadModel,
    ResidualBlock,
    load_pretrained,
)
from mambaseq.masked_lm import MambaForMaskedLM
from mambaseq.modules import BiMamba, Mamba, MambaCache

__version__ = "0.1.0"

__all__ = [
    "BiMamba",
    "Mamba",
    "MambaCache",
    "MambaConfig",
    "MambaBackbone",
    "MambaForMaskedLM",
    "MambaForSequenceClassification",
    "MambaLMHeadModel",
    "ResidualBlock",
    "load_pretrained",
]
