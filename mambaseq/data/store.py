"""The on-disk token store: one memory-mapped uint8 array per sequence plus a JSON index.

Layout (written atomically by ``mambaseq.data_prep.store.StoreWriter``)::

    store/
      index.json          format, version, vocab, source (+ "synthetic" flag), input fingerprint,
                          sequences: [{name, file, length, sha256, source_file, label?, split?, mask_file?}]
      seqs/000000.npy     (length,) uint8 token ids (mambaseq.data.dna ids: A C G T N = 0..4)
      masks/000000.npy    optional (n_runs, 2) int64 soft-masked [start, end) runs; never in the tokens

Reading needs numpy only, so a prepared store can be carried to a machine without Biopython.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .dna import VOCAB

FORMAT = "mambaseq.token_store"
VERSION = 1
INDEX = "index.json"


def tokens_sha256(tokens: np.ndarray) -> str:
    """Checksum of a token array's bytes (what ``index.json`` records per sequence)."""
    return hashlib.sha256(np.ascontiguousarray(tokens).data).hexdigest()


class TokenStore:
    """Read-only view of a prepared token store.

    >>> store = TokenStore("data/apes")           # doctest: +SKIP
    >>> store.names[:2], store.lengths[:2]         # doctest: +SKIP
    >>> store.window(0, 1000, 2024)                # (1024,) uint8, a slice of the memory map
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        index_path = self.path / INDEX
        if not index_path.is_file():
            raise FileNotFoundError(
                f"{self.path}: not a token store (no {INDEX}); prepare one with `mambaseq.data_prep`"
            )
        with open(index_path) as f:
            self.index: dict[str, Any] = json.load(f)
        if self.index.get("format") != FORMAT or self.index.get("version") != VERSION:
            raise ValueError(
                f"{index_path}: expected format {FORMAT!r} version {VERSION}, got "
                f"{self.index.get('format')!r} version {self.index.get('version')!r}"
            )
        if list(self.index.get("vocab", [])) != list(VOCAB):
            raise ValueError(f"{index_path}: vocabulary {self.index.get('vocab')} differs from {list(VOCAB)}")
        self.records: list[dict[str, Any]] = self.index["sequences"]
        self.names: list[str] = [r["name"] for r in self.records]
        self.lengths = np.array([r["length"] for r in self.records], dtype=np.int64)
        self._by_name = {n: i for i, n in enumerate(self.names)}
        self._arrays: dict[int, np.ndarray] = {}

    # --- metadata -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        syn = ", SYNTHETIC" if self.synthetic else ""
        return f"TokenStore({str(self.path)!r}, {len(self)} sequences, {int(self.lengths.sum()):,} bases{syn})"

    @property
    def synthetic(self) -> bool:
        return bool(self.index.get("synthetic", False))

    @property
    def source(self) -> dict[str, Any]:
        return self.index.get("source", {})

    @property
    def label_names(self) -> list[str]:
        """Class names (index-level ``labels``), or the sorted distinct per-sequence labels."""
        if "labels" in self.index:
            return list(self.index["labels"])
        return sorted({r["label"] for r in self.records if "label" in r})

    def label_ids(self) -> np.ndarray:
        """(n_sequences,) int64 class id of each sequence (-1 where it has no label)."""
        lut = {n: i for i, n in enumerate(self.label_names)}
        return np.array([lut.get(r.get("label"), -1) for r in self.records], dtype=np.int64)

    def resolve(self, seq: int | str) -> int:
        """Sequence index from an index or a name (ValueError naming the store if unknown)."""
        if isinstance(seq, (int, np.integer)):
            if not 0 <= seq < len(self):
                raise ValueError(f"{self.path}: sequence index {seq} out of range 0..{len(self) - 1}")
            return int(seq)
        if seq not in self._by_name:
            raise ValueError(f"{self.path}: no sequence named {seq!r}")
        return self._by_name[seq]

    # --- data -------------------------------------------------------------------------------------
    def get(self, seq: int | str) -> np.ndarray:
        """The whole sequence as a read-only (length,) uint8 memory map (opened once, then cached)."""
        i = self.resolve(seq)
        arr = self._arrays.get(i)
        if arr is None:
            arr = np.load(self.path / self.records[i]["file"], mmap_mode="r")
            self._arrays[i] = arr
        return arr

    def window(self, seq: int | str, start: int, end: int) -> np.ndarray:
        """Tokens [start, end) of one sequence: an O(end - start) slice of the memory map (a view)."""
        i = self.resolve(seq)
        if not 0 <= start <= end <= self.lengths[i]:
            raise ValueError(f"{self.names[i]}: window [{start}, {end}) outside [0, {self.lengths[i]})")
        return self.get(i)[start:end]

    def mask_runs(self, seq: int | str) -> np.ndarray:
        """(n_runs, 2) int64 soft-masked [start, end) runs of a sequence (empty if none recorded)."""
        r = self.records[self.resolve(seq)]
        if not r.get("mask_file"):
            return np.zeros((0, 2), dtype=np.int64)
        return np.load(self.path / r["mask_file"])

    def verify(self) -> None:
        """Re-hash every sequence against the index; ValueError naming the first mismatch."""
        for i, r in enumerate(self.records):
            arr = self.get(i)
            if arr.shape != (r["length"],) or tokens_sha256(arr) != r["sha256"]:
                raise ValueError(f"{self.path}: sequence {r['name']!r} ({r['file']}) fails its checksum")
