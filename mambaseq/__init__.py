"""mambaseq: Mamba selective state space models for genomics and audio.

Importing the package registers every architecture (``mambaseq.pretrained.ARCHITECTURES``), so
``load_pretrained`` / ``build_model`` know them all, whichever ``mambaseq.*`` module is imported first.
"""

from mambaseq.config import MambaBlockConfig, MambaConfig
from mambaseq.model import (
    MambaBackbone,
    MambaForSequenceClassification,
    MambaLMHeadModel,
    ResidualBlock,
    build_model,
    load_pretrained,
)
from mambaseq.masked_lm import MambaForMaskedLM
from mambaseq.modules import BiMamba, Mamba, MambaCache
from mambaseq.sashimi import SaShiMiConfig, SaShiMiLM

__version__ = "0.1.0"

__all__ = [
    "BiMamba",
    "Mamba",
    "MambaBlockConfig",
    "MambaCache",
    "MambaConfig",
    "MambaBackbone",
    "MambaForMaskedLM",
    "MambaForSequenceClassification",
    "MambaLMHeadModel",
    "ResidualBlock",
    "SaShiMiConfig",
    "SaShiMiLM",
    "build_model",
    "load_pretrained",
]
