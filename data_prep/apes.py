"""Great-ape species data sets behind one interface: per-species FASTA, Debian's chr22 MAF, or the simulator.

Every source yields the same kind of store: sequences labelled with their species, each tagged with a
split (train/val/test) chosen by homologous region (MAF, simulator) or held-out chromosome (FASTA), so
no test region is seen during training for any species.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from mambaseq.data.store import TokenStore

from .fasta import prepare_fasta
from .maf import prepare_maf
from .simulate import SYNTHETIC_NOTE, SimParams, prepare_simulated

# the real human/chimp/gorilla/orangutan chr22 alignment (Ensembl Compara EPO) in `maffilter-examples`
DEBIAN_MAF = Path("/usr/share/doc/maffilter/examples/Gorilla/"
                  "Compara.epo_5_catarrhini_hsap-projected.chr22.subset.nogap.cleaned_aln.maf.gz")
SOURCES = ("auto", "fasta", "maf", "simulated")


def find_debian_maf() -> Path | None:
    """The Debian chr22 MAF when `apt-get install maffilter-examples` has put it in place."""
    return DEBIAN_MAF if DEBIAN_MAF.is_file() else None


def resolve_source(source: str, fasta: Mapping | None = None, maf: str | Path | None = None) -> str:
    """'auto' -> 'fasta' (if files given), else 'maf' (if a MAF file is given), else 'simulated'.

    Debian's chr22 alignment is never chosen automatically: it is human-projected and one-to-one, so the
    species cannot be told apart from it (a negative control, ``source=maf``; issue 10)."""
    if source not in SOURCES:
        raise ValueError(f"apes data source must be one of {SOURCES}, got {source!r}")
    if source != "auto":
        return source
    if fasta and any(fasta.values()):
        return "fasta"
    if maf:
        return "maf"
    return "simulated"


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
            ``val_chroms`` / ``test_chroms`` (e.g. ["chr21"], ["chr22"]).
        maf: a MAF alignment (default: Debian's chr22 alignment when installed).
        region_size: alignment columns (MAF, default 500 kb) or ancestral bases (simulator, default 200 kb)
            per split region.
    """
    kind = resolve_source(source, fasta, maf)
    out_dir = Path(out_root) / f"apes_{kind}"
    if kind == "fasta":
        if not fasta or any(not v for v in fasta.values()):
            missing = sorted(k for k, v in (fasta or {}).items() if not v)
            raise ValueError("apes source 'fasta' needs data.fasta: {species: path}"
                             + (f"; no path given for {missing}" if missing else ""))
        if not test_chroms:
            raise ValueError("apes source 'fasta' needs data.test_chroms (held-out chromosomes, e.g. [chr22])")
        store = prepare_fasta(dict(fasta), out_dir, splits={"val": list(val_chroms), "test": list(test_chroms)},
                              source={"synthetic": False, "description": "per-species FASTA genomes"},
                              progress=progress)
    elif kind == "maf":
        path = Path(maf) if maf else find_debian_maf()
        if path is None:
            raise FileNotFoundError(f"no MAF given and Debian's is not installed ({DEBIAN_MAF}); "
                                    "run `apt-get install maffilter-examples` or use source=simulated")
        store = prepare_maf(path, out_dir, region_size=region_size or 500_000, fractions=fractions, seed=seed,
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


def describe(store: TokenStore) -> str:
    """One line saying what the data are (synthetic data say so)."""
    src = store.source
    what = {"maf": f"REAL alignment {Path(src.get('file', '?')).name}",
            "fasta": "REAL per-species FASTA genomes",
            "simulated": SYNTHETIC_NOTE}.get(src.get("kind"), src.get("kind", "?"))
    if store.synthetic and "SYNTHETIC" not in what and "SIMULATED" not in what:
        what = f"SYNTHETIC {what}"
    return f"{what}; {len(store.label_names)} species {store.label_names}; {int(store.lengths.sum()):,} bases"
