"""Sequence data: DNA tokenizer, the on-disk token store (reader and writer), window datasets, genome
splits with the data-parallel sampler, k-mer statistics (``mambaseq.data.kmers``).

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
from .genome import ShardedLMBatches, acgt_runs, genome_splits, sharded_eval_batches
from .store import StoreWriter, TokenStore, describe, fingerprint, store_is_current
from .windows import (SPLITS, Interval, RandomWindows, TiledWindows, format_region, parse_region, read_bed,
                      read_split_bed, split_intervals, write_bed)

__all__ = [
    "ALPHABET", "VOCAB", "N_ID", "PAD_ID", "CharTokenizer", "KmerTokenizer", "encode", "decode",
    "reverse_complement", "rc_augment", "TokenStore", "StoreWriter", "describe", "fingerprint",
    "store_is_current", "SPLITS", "Interval", "RandomWindows", "TiledWindows", "read_bed", "read_split_bed",
    "write_bed", "split_intervals", "parse_region", "format_region", "ShardedLMBatches", "acgt_runs",
    "genome_splits", "sharded_eval_batches",
]
