"""Where real data come from when a run does not name a file: genomes and an alignment that Debian
packages install, and the one rule that picks a source for ``data.source=auto``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

# human chr20 (GRCh37, 63 Mb) shipped by Debian's vt-examples (dpkg -L vt-examples)
VT_CHR20 = Path("/usr/share/doc/vt/examples/ref/20.fa.gz")
# the real human/chimp/gorilla/orangutan chr22 alignment (Ensembl Compara EPO) in `maffilter-examples`
DEBIAN_MAF = Path("/usr/share/doc/maffilter/examples/Gorilla/"
                  "Compara.epo_5_catarrhini_hsap-projected.chr22.subset.nogap.cleaned_aln.maf.gz")


def find_debian_maf() -> Path | None:
    """The Debian chr22 MAF when `apt-get install maffilter-examples` has put it in place."""
    return DEBIAN_MAF if DEBIAN_MAF.is_file() else None


def _given(files: Any) -> bool:
    """A FASTA path, a list of them, or {label: path(s)} with at least one path set."""
    if isinstance(files, Mapping):
        return any(files.values())
    return bool(files)


def resolve_source(source: str, sources: Sequence[str], fasta: Any = None, maf: str | Path | None = None) -> str:
    """``data.source`` of a data set offering ``sources``: itself unless 'auto'; 'auto' is 'fasta' when
    FASTA files are given, else 'maf' when a MAF file is given, else human chr20 ('chr20', where offered)
    when Debian's vt-examples is installed, else 'simulated'.

    Debian's chr22 alignment is never chosen automatically: it is human-projected and one-to-one, so the
    species cannot be told apart from it (a negative control, ``source=maf``; issue 10)."""
    if source not in sources:
        raise ValueError(f"data.source must be one of {tuple(sources)}, got {source!r}")
    if source != "auto":
        return source
    if _given(fasta):
        return "fasta"
    if maf:
        return "maf"
    if "chr20" in sources and VT_CHR20.is_file():
        return "chr20"
    return "simulated"
