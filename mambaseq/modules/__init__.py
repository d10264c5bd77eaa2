"""Neural network modules shared by every model: the Mamba block and its bidirectional wrapper, the residual
block and its norm, the backbone with its token-id inputs, weight initialisation, reverse-complement helpers."""

from .backbone import MambaBackbone, add_lm_head, check_token_ids, kmer_ids
from .bimamba import BiMamba
from .block import ResidualBlock, norm_layer
from .init import init_weights
from .mamba import Mamba, MambaCache

__all__ = ["BiMamba", "Mamba", "MambaBackbone", "MambaCache", "ResidualBlock", "add_lm_head", "check_token_ids",
           "init_weights", "kmer_ids", "norm_layer"]
