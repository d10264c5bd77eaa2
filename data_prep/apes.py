"""Great-ape species data sets behind one interface: per-species FASTA, Debian's chr22 MAF, or the simulator.

Every source yields the same kind of store: sequences labelled with their species, each tagged with a
split (train/val/test) chosen by homologous region (MAF, simulator) or held-out chromosome (FASTA), so
no test region is seen during training for any species.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from mambaseq.data.store import TokenStore, describe

from mambaseq.settings import ConfigError

from .fasta import UnmatchedSplitError, prepare_fasta
from .maf import prepare_maf
from .simulate import SYNTHETIC_NOTE, SimParams, prepare_simulated
from .sources import DEBIAN_MAF, find_debian_maf, resolve_source

SOURCES = ("auto", "fasta", "maf", "simulated")


def prepare_apes(
    source: str = "auto",
    out_root: str | Path = "data",
    *,
    fasta: Mapping[str, str | Sequence[str]] | None = None,
    val_chroms: Sequence[str] = (),
    test_chroms: Sequence[str] = (),
    maf: str | Path | None = None,
    region_size: int | None = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    sim_length: int = SimParams.length,
    sim_te_rate_scale: float = SimParams.te_rate_scale,
    progress: bool = True,
) -> TokenStore:
    """Prepare (or reuse) the great-apes store and return it; prints which data it is.

    Args:
        source: auto | fasta | maf | simulated.
        out_root: the store goes to ``out_root/apes_<source>``.
        fasta: {species: FASTA path or paths} (real genomes); held-out chromosomes by record id in
            ``val_chroms`` / ``test_chroms`` (e.g. ["chr21"], ["chr22"]; ints are read as names, 3 -> "3").
            An id that no record has raises ConfigError naming the ids there are.
        maf: a MAF alignment (default: Debian's chr22 alignment when installed).
        region_size: alignment columns (MAF, default 500 kb) or ancestral bases (simulator, default 200 kb)
            per split region.
    """
    kind = resolve_source(source, SOURCES, fasta, maf)
    out_dir = Path(out_root) / f"apes_{kind}"
    if kind == "fasta":
        if not fasta or any(not v for v in fasta.values()):
            missing = sorted(k for k, v in (fasta or {}).items() if not v)
            raise ValueError("apes source 'fasta' needs data.fasta: {species: path}"
                             + (f"; no path given for {missing}" if missing else ""))
        if not test_chroms:
            raise ValueError("apes source 'fasta' needs data.test_chroms (held-out chromosomes, e.g. [chr22])")
        held_out = {"val": [str(c) for c in val_chroms], "test": [str(c) for c in test_chroms]}  # 3 -> "3"
        try:
            store = prepare_fasta(dict(fasta), out_dir, splits=held_out, progress=progress,
                                  source={"synthetic": False, "description": "per-species FASTA genomes"})
        except UnmatchedSplitError as e:
            raise ConfigError(f"data.{e.split}_chroms={held_out[e.split]}: {e}") from None
    elif kind == "maf":
        path = Path(maf) if maf else find_debian_maf()
        if path is None:
            raise FileNotFoundError(f"no MAF given and Debian's is not installed ({DEBIAN_MAF}); "
                                    "run `apt-get install maffilter-examples` or use source=simulated")
        store = prepare_maf(path, out_dir, region_size=region_size or 100_000, fractions=fractions, seed=seed,
                            progress=progress)
    else:
        if progress:
            print(f"great-apes data: the realistic simulator — {SYNTHETIC_NOTE} (real genomes: data.source=fasta; "
                  "Debian's chr22 alignment, a negative control: data.source=maf)")
        store = prepare_simulated(out_dir, SimParams(length=sim_length, te_rate_scale=sim_te_rate_scale, seed=seed),
                                  region_size=region_size or 200_000, fractions=fractions, progress=progress)
    if progress:
        print(f"great-apes data: {describe(store)}")
    return store

