"""Atomic, idempotent writing of token stores (the reader is ``mambaseq.data.store.TokenStore``).

A store is built in a temporary sibling directory and renamed into place only when complete, so an
interrupted or failed preparation leaves either the previous store or nothing. Each store records a
fingerprint of its inputs and parameters; preparing again with the same fingerprint is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mambaseq.data.dna import VOCAB
from mambaseq.data.store import FORMAT, INDEX, VERSION, TokenStore, tokens_sha256


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(kind: str, params: dict[str, Any], files: list[str | Path] = ()) -> str:
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
    On an exception the temporary directory is deleted and ``out_dir`` is left untouched.
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
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.out_dir.parent, prefix=f".{self.out_dir.name}.tmp-"))
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

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            self._commit()
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def _commit(self) -> None:
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
        # swap in: old store (if any) moves aside first so that out_dir is never half-written
        trash = None
        if self.out_dir.exists():
            trash = Path(tempfile.mkdtemp(dir=self.out_dir.parent, prefix=f".{self.out_dir.name}.old-"))
            os.rename(self.out_dir, trash / "store")
        os.rename(self.tmp, self.out_dir)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
