"""mambaseq: Mamba selective state space models for genomics and audio."""

from mambaseq.config import MambaConfig
from mambaseq.model import (
    MambaBackbone,
    MambaForSequenceClassification,
    MambaLMHeadModel,
    ResidualBlock,
    load_pretrained,
)
from mambaseq.modules import Mamba, MambaCache

__version__ = "0.1.0"

__all__ = [
    "Mamba",
    "MambaCache",
    "MambaConfig",
    "MambaBackbone",
    "MambaForSequenceClassification",
    "MambaLMHeadModel",
    "ResidualBlock",
    "load_pretrained",
]
