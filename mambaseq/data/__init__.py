"""Sequence data: DNA tokenizer, the on-disk token store and window datasets.

Nothing here imports Biopython: training reads prepared stores with numpy alone
(FASTA/MAF parsing lives in ``mambaseq.data_prep``).
"""

from .dna import (
    ALPHABET,
    CharTokenizer,
    KmerTokenizer,
    N_ID,
    PAD_ID,
    VOCAB,
    encode,
    decode,
    reverse_complement,
    rc_augment,
)
from .store import TokenStore
from .windows import (Interval, RandomWindows, TiledWindows, format_region, parse_region, read_bed, split_intervals,
                      write_bed)

__all__ = [
    "ALPHABET", "VOCAB", "N_ID", "PAD_ID", "CharTokenizer", "KmerTokenizer", "encode", "decode",
    "reverse_complement", "rc_augment", "TokenStore", "Interval", "RandomWindows", "TiledWindows",
    "read_bed", "write_bed", "split_intervals", "parse_region", "format_region",
]
