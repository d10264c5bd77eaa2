"""Genome stores for next-token pretraining.

Default data: human chr20 (GRCh37, 63 Mb) from Debian's ``vt-examples`` when installed
(``apt-get install vt-examples``), any FASTA a user gives, else a SYNTHETIC genome from the great-apes
simulator (its ancestral genome: realistic GC blocks and repeats), labelled as such everywhere.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mambaseq.data.store import StoreWriter, TokenStore, fingerprint, store_is_current

from .sources import VT_CHR20, resolve_source

SOURCES = ("auto", "fasta", "chr20", "simulated")


def prepare_genome(data: dict[str, Any], progress: bool = True) -> TokenStore:
    """Prepare (or reuse: preparation is idempotent and atomic) the pretraining store of ``data``
    (the Hydra ``data:`` group). An already prepared store (``data.store``) needs numpy alone."""
    if data.get("store"):
        return TokenStore(data["store"])
    kind = resolve_source(data["source"], SOURCES, data.get("fasta"))
    out = Path(data["out_root"]) / f"pretrain_{kind}"
    from .fasta import prepare_fasta  # Biopython only when a FASTA must be parsed

    if kind == "fasta":
        files = [data["fasta"]] if isinstance(data["fasta"], str) else list(data["fasta"] or [])
        if not files:
            raise ValueError("data.source=fasta needs data.fasta: a FASTA path or a list of paths")
        return prepare_fasta(files, out, source={"kind": "fasta", "synthetic": False}, progress=progress)
    if kind == "chr20":
        if not VT_CHR20.is_file():
            raise FileNotFoundError(f"{VT_CHR20}: not installed; run `apt-get install vt-examples` or pick "
                                    "data.source=fasta|simulated")
        return prepare_fasta([VT_CHR20], out, progress=progress, source={
            "kind": "chr20", "synthetic": False,
            "description": "human chromosome 20 (GRCh37) from Debian vt-examples"})
    return prepare_simulated_genome(out, int(data["sim_length"]), int(data["seed"]), progress)


def prepare_simulated_genome(out: Path, length: int, seed: int, progress: bool = True) -> TokenStore:
    """The simulator's ancestral genome alone (random sequence in GC blocks), one unlabelled sequence."""
    from .simulate import SimParams, ancestral_genome

    params = SimParams(length=length, background="random", seed=seed)
    fp = fingerprint("pretrain-simulated", asdict(params))
    if store_is_current(out, fp):
        return TokenStore(out)
    t0 = time.perf_counter()
    seq, _ = ancestral_genome(params, np.random.default_rng(seed))
    note = "SYNTHETIC genome from mambaseq's simulator (random sequence in GC blocks; not real DNA)"
    with StoreWriter(out, fp, source={"kind": "simulated", "synthetic": True, "description": note,
                                      "params": asdict(params)}, synthetic=True) as w:
        w.add("synthetic_genome", seq.astype(np.uint8), source_file="simulated")
    store = TokenStore(out)
    if progress:
        print(f"wrote {store} in {time.perf_counter() - t0:.1f} s — {note}")
    return store
