"""DNA tokenization on uint8 arrays: character vocabulary, reverse complement, k-mers.

Token ids are the same on disk (token store) and in the model, so loading a window is a memory-map
slice with no remapping:

    id:    0  1  2  3  4  5      6      7      8       9
    token: A  C  G  T  N  [PAD]  [BOS]  [EOS]  [MASK]  [SEP]

Everything is vectorised through 256-entry lookup tables (no per-character Python loops, no string
building): encoding 100 Mb takes well under a second.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from .kmers import kmer_codes

ALPHABET = "ACGTN"
SPECIALS = ("[PAD]", "[BOS]", "[EOS]", "[MASK]", "[SEP]")
VOCAB: tuple[str, ...] = tuple(ALPHABET) + SPECIALS
A_ID, C_ID, G_ID, T_ID, N_ID = range(5)
PAD_ID, BOS_ID, EOS_ID, MASK_ID, SEP_ID = range(5, 10)
INVALID = 255
# IUPAC nucleotide codes beyond ACGT (ambiguity codes): all become N. U (RNA) reads as T.
IUPAC_AMBIGUOUS = "RYSWKMBDHVN"

_ENCODE = np.full(256, INVALID, dtype=np.uint8)
for _i, _c in enumerate("ACGT"):
    _ENCODE[ord(_c)] = _ENCODE[ord(_c.lower())] = _i
_ENCODE[ord("U")] = _ENCODE[ord("u")] = T_ID
for _c in IUPAC_AMBIGUOUS:
    _ENCODE[ord(_c)] = _ENCODE[ord(_c.lower())] = N_ID

_DECODE = np.frombuffer(b"ACGTN" + b"?" * 251, dtype=np.uint8)
# complement of every id; N and specials map to themselves
_COMPLEMENT = np.arange(256, dtype=np.uint8)
_COMPLEMENT[:4] = [T_ID, G_ID, C_ID, A_ID]
_COMPLEMENT_T = torch.from_numpy(_COMPLEMENT.astype(np.int64))  # every uint8 id: models pad the vocabulary

_LOWER = np.zeros(256, dtype=bool)
_LOWER[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)] = True


def _as_bytes(seq: str | bytes | np.ndarray) -> np.ndarray:
    if isinstance(seq, np.ndarray):
        if seq.dtype != np.uint8:
            raise ValueError(f"expected a uint8 byte array, got dtype {seq.dtype}")
        return seq
    if isinstance(seq, str):
        seq = seq.encode("ascii", errors="replace")  # non-ASCII becomes '?', reported as invalid below
    return np.frombuffer(seq, dtype=np.uint8)


def encode(seq: str | bytes | np.ndarray, *, where: str = "sequence") -> np.ndarray:
    """Encode DNA text to token ids.

    Args:
        seq: text (str/bytes) or its ASCII bytes as a uint8 array, length L. Case is ignored.
        where: used in the error message (e.g. ``"genome.fa record chr1"``).
    Returns:
        (L,) uint8 ids in 0..4 (IUPAC ambiguity codes become N).
    Raises:
        ValueError naming ``where``, the 0-based position and the character of the first symbol that is
        not an IUPAC nucleotide code.
    """
    raw = _as_bytes(seq)
    ids = _ENCODE[raw]
    bad = np.flatnonzero(ids == INVALID)
    if bad.size:
        pos = int(bad[0])
        ch = chr(raw[pos]) if raw[pos] < 128 else f"\\x{raw[pos]:02x}"
        raise ValueError(
            f"{where}: invalid character {ch!r} at position {pos} (0-based); expected IUPAC nucleotide "
            f"codes ACGTU{IUPAC_AMBIGUOUS} (any case); {bad.size} invalid character(s) in total"
        )
    return ids


def decode(ids: np.ndarray | torch.Tensor | Iterable[int]) -> str:
    """Token ids (L,) -> DNA string (specials print as '?')."""
    if isinstance(ids, torch.Tensor):
        ids = ids.cpu().numpy()
    arr = np.asarray(ids).astype(np.uint8, copy=False)
    return _DECODE[arr].tobytes().decode("ascii")


def soft_mask_runs(seq: str | bytes | np.ndarray) -> np.ndarray:
    """Half-open [start, end) runs of lower-case (soft-masked) characters: (n_runs, 2) int64."""
    low = _LOWER[_as_bytes(seq)].astype(np.int8)
    edges = np.diff(np.concatenate(([0], low, [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return np.stack([starts, ends], axis=1).astype(np.int64)


def reverse_complement(ids: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Reverse complement of token ids along the last axis; N and specials keep their id.

    Works on numpy (..., L) uint8/int arrays and torch (..., L) integer tensors (any device). The result
    is a new C-contiguous array/tensor of the input's dtype (never a negative-stride view), so
    ``torch.from_numpy(reverse_complement(x))`` works.
    """
    if isinstance(ids, torch.Tensor):
        return complement(ids).flip(-1)
    arr = np.asarray(ids)
    if arr.dtype.kind not in "ui" or arr.ndim == 0:
        raise ValueError(f"reverse_complement expects (..., L) integer token ids, got {arr.dtype} {arr.shape}")
    if arr.dtype != np.uint8 and arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(f"token ids must lie in [0, 255], got range [{arr.min()}, {arr.max()}]")
    # a fresh C-order allocation: ascontiguousarray may keep a negative stride on a length-1 axis
    return _COMPLEMENT[arr[..., ::-1]].astype(arr.dtype, order="C")


def complement(ids: torch.Tensor) -> torch.Tensor:
    """Complement of torch token ids (..., L) without reversal: A<->T, C<->G; N and specials keep their id."""
    return _COMPLEMENT_T.to(ids.device)[ids.long()].to(ids.dtype)


def rc_augment(batch: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Reverse-complement each row of a (b, L) id batch with probability p (labels are unchanged).

    Uses ``generator`` (CPU) so augmentation is reproducible from the training seed.
    """
    if batch.ndim != 2:
        raise ValueError(f"rc_augment expects a (batch, length) tensor, got shape {tuple(batch.shape)}")
    flip = torch.rand(batch.shape[0], generator=generator) < p
    if not bool(flip.any()):
        return batch
    out = batch.clone()
    out[flip.to(batch.device)] = reverse_complement(batch[flip.to(batch.device)])
    return out


class CharTokenizer:
    """Character-level DNA tokenizer (the vocabulary above); ids are the token-store ids."""

    vocab: tuple[str, ...] = VOCAB
    vocab_size: int = len(VOCAB)
    pad_id, bos_id, eos_id, mask_id, sep_id, n_id = PAD_ID, BOS_ID, EOS_ID, MASK_ID, SEP_ID, N_ID

    def encode(self, seq: str | bytes, add_bos: bool = False, add_eos: bool = False) -> np.ndarray:
        """DNA text of length L -> (L [+1 +1],) uint8 ids."""
        ids = encode(seq)
        if add_bos or add_eos:
            ids = np.concatenate([[BOS_ID]] * add_bos + [ids] + [[EOS_ID]] * add_eos).astype(np.uint8)
        return ids

    def decode(self, ids: np.ndarray | torch.Tensor, skip_special: bool = True) -> str:
        arr = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
        if skip_special:
            arr = arr[arr <= N_ID]
        return decode(arr)


class KmerTokenizer:
    """Optional k-mer tokenization of character ids: (L,) -> (ceil((L-k+1)/stride),) k-mer ids.

    ids 0..4^k-1 are ACGT k-mers (base-4, first base most significant); any k-mer containing N (or a
    special) becomes ``unk_id`` = 4^k; specials follow (``mambaseq.data.kmers.kmer_codes``).
    """

    def __init__(self, k: int = 3, stride: int | None = None):
        if k < 1 or k > 12:
            raise ValueError(f"k must be in 1..12, got {k}")
        self.k, self.stride = k, stride or k
        self.unk_id = 4**k
        self.pad_id = self.unk_id + 1
        self.vocab_size = self.unk_id + 2

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"KmerTokenizer expects a 1-D id array, got shape {ids.shape}")
        if ids.size < self.k:
            return np.zeros(0, dtype=np.int64)
        out = kmer_codes(ids, self.k)[:: self.stride]
        out[out < 0] = self.unk_id
        return out

    def decode(self, kmer_ids: np.ndarray) -> list[str]:
        """k-mer ids -> list of k-mer strings ('N'*k for unk)."""
        out = []
        for v in np.asarray(kmer_ids).tolist():
            if v >= self.unk_id:
                out.append("N" * self.k)
                continue
            out.append("".join("ACGT"[(v >> (2 * (self.k - 1 - j))) & 3] for j in range(self.k)))
        return out
