"""Neural network modules (the Mamba block)."""

from .mamba import Mamba, MambaCache

__all__ = ["Mamba", "MambaCache"]
