"""The on-disk token store: one memory-mapped uint8 array per sequence plus a JSON index, its reader
(``TokenStore``) and its writer (``StoreWriter``: atomic and idempotent).

Layout::

    store/
      index.json          format, version, vocab, source (+ "synthetic" flag), input fingerprint,
                          sequences: [{name, file, length, sha256, source_file, label?, split?, mask_file?}]
      seqs/000000.npy     (length,) uint8 token ids (mambaseq.data.dna ids: A C G T N = 0..4)
      masks/000000.npy    optional (n_runs, 2) int64 soft-masked [start, end) runs; never in the tokens

Reading needs numpy only, so a prepared store can be carried to a machine without Biopython.

A store is built in a temporary sibling folder and renamed into place only when complete
(``mambaseq.fileio.atomic_dir``), so an interrupted or failed preparation leaves either the previous store
or nothing. Each store records a fingerprint of its inputs and parameters; preparing again with the same
fingerprint is a no-op (``store_is_current``). ``mambaseq.data_prep`` turns raw files into stores with it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mambaseq.fileio import atomic_dir

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
        # the simulator's genomes say SIMULATED, as every other line about them does; other made-up data SYNTHETIC
        syn = (", SIMULATED" if self.source.get("kind") == "simulated" else ", SYNTHETIC") if self.synthetic else ""
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


def describe(store: TokenStore) -> str:
    """One line saying what the data are; synthetic data say so. A labelled store (one species per label:
    the great apes) names its species, any other its sequence count."""
    src, bases = store.source, int(store.lengths.sum())
    if store.label_names:
        kind = src.get("kind")
        what = {"maf": f"REAL alignment {Path(src.get('file', '?')).name}", "fasta": "REAL per-species FASTA genomes",
                # the simulator's note comes first in its description, the background after the ';'
                "simulated": str(src.get("description", "simulated")).split(";")[0]}.get(kind, kind or "?")
        if store.synthetic and "SYNTHETIC" not in what and "SIMULATED" not in what:
            what = f"SYNTHETIC {what}"
        return f"{what}; {len(store.label_names)} species {store.label_names}; {bases:,} bases"
    what = src.get("description") or src.get("kind", "data")
    flag = "SYNTHETIC: " if store.synthetic and "SYNTHETIC" not in what else ""
    return f"{flag}{what} ({len(store)} sequence(s), {bases:,} bases)"


# --- writing --------------------------------------------------------------------------------------------
def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(kind: str, params: dict[str, Any], files: Sequence[str | Path] = ()) -> str:
    """Identity of a preparation: its kind, parameters and the content of its input files."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, "version": VERSION, "kind": kind,
                                   "params": params}, sort_keys=True, default=str).encode())
    for f in files:
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def store_is_current(out_dir: str | Path, fp: str) -> bool:
    """True when ``out_dir`` holds a complete store made from the same fingerprint."""
    try:
        store = TokenStore(out_dir)
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        return False
    if store.index.get("fingerprint") != fp:
        return False
    return all((store.path / r["file"]).is_file() for r in store.records)


class StoreWriter:
    """Context manager that writes a store atomically.

    >>> with StoreWriter("data/x", fp, source={"kind": "fasta"}) as w:   # doctest: +SKIP
    ...     w.add("chr1", tokens, label="human", split="train")
    On an exception the temporary folder is deleted and ``out_dir`` is left untouched.
    """

    def __init__(self, out_dir: str | Path, fp: str, source: dict[str, Any], synthetic: bool = False,
                 labels: list[str] | None = None, extra: dict[str, Any] | None = None):
        self.out_dir = Path(out_dir)
        self.fp, self.source, self.synthetic, self.labels = fp, source, synthetic, labels
        self.extra = extra or {}
        self.records: list[dict[str, Any]] = []
        self._names: set[str] = set()
        self.tmp: Path | None = None

    def __enter__(self) -> "StoreWriter":
        self._swap = atomic_dir(self.out_dir)
        self.tmp = self._swap.__enter__()
        (self.tmp / "seqs").mkdir()
        return self

    def add(self, name: str, tokens: np.ndarray, mask_runs: np.ndarray | None = None, **fields: Any) -> None:
        """Add one sequence: (L,) uint8 ids; optional (n, 2) soft-mask runs; extra JSON fields."""
        assert self.tmp is not None, "use StoreWriter as a context manager"
        if name in self._names:
            raise ValueError(f"{fields.get('source_file', self.out_dir)}: duplicate sequence name {name!r}")
        if tokens.dtype != np.uint8 or tokens.ndim != 1:
            raise ValueError(f"sequence {name!r}: tokens must be a 1-D uint8 array, got {tokens.dtype} {tokens.shape}")
        self._names.add(name)
        i = len(self.records)
        rec: dict[str, Any] = {"name": name, "file": f"seqs/{i:06d}.npy", "length": int(tokens.size),
                               "sha256": tokens_sha256(tokens)}
        np.save(self.tmp / rec["file"], tokens)
        if mask_runs is not None and len(mask_runs):
            (self.tmp / "masks").mkdir(exist_ok=True)
            rec["mask_file"] = f"masks/{i:06d}.npy"
            np.save(self.tmp / rec["mask_file"], np.asarray(mask_runs, dtype=np.int64))
        rec.update(fields)
        self.records.append(rec)

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        if exc_type is None:
            try:
                self._write_index()
            except BaseException as e:  # the temporary folder goes; out_dir stays as it was
                self._swap.__exit__(type(e), e, e.__traceback__)
                raise
        return self._swap.__exit__(exc_type, exc, tb)

    def _write_index(self) -> None:
        assert self.tmp is not None
        if not self.records:
            raise ValueError(f"{self.out_dir}: no sequences to write")
        index = {"format": FORMAT, "version": VERSION, "vocab": list(VOCAB), "dtype": "uint8",
                 "fingerprint": self.fp, "synthetic": self.synthetic, "source": self.source,
                 "total_length": int(sum(r["length"] for r in self.records)), **self.extra}
        if self.labels is not None:
            index["labels"] = list(self.labels)
        index["sequences"] = self.records
        with open(self.tmp / INDEX, "w") as f:
            json.dump(index, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
