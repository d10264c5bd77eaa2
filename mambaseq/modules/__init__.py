"""Neural network modules: the Mamba block, its bidirectional wrapper and reverse-complement helpers."""

from .bimamba import BiMamba
from .mamba import Mamba, MambaCache

__all__ = ["BiMamba", "Mamba", "MambaCache"]
