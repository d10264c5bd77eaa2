"""Seeded great-ape genome simulator (SIMULATED data, labelled as such in every output).

A real ancestral background — a stretch of human chromosome 20 from Debian's ``vt-examples`` when it is
installed (random isochore-like sequence otherwise, said so in the store) — evolves down the great-ape
tree (five species, with bonobo). On every branch:

* point substitutions with a CpG-elevated spectrum: C->T / G->A at CpG sites ``cpg_factor`` times faster
  than any other site, transitions twice as likely as transversions elsewhere;
* small indels (``indel_ratio`` per substitution, geometric lengths <= 30);
* insertions of transposable elements from the subfamilies active on that branch: an Alu-like family
  (~300 bp: two GC-rich monomers, an A-rich linker and a poly-A tail) and an L1-like family (~6 kb,
  AT-rich, inserted 5'-truncated, ~1 kb on average), each with a target-site duplication. A branch's
  subfamily is its parent's consensus plus its own diagnostic substitutions (``subfamily_divergence``)
  and one diagnostic indel, as AluY -> AluYa5 / L1PA2 -> L1HS; copies are young (< 1% diverged);
* tandem expansions of a lineage's own satellite unit (arrays of 8-60 copies of a 20-180 bp unit, as the
  subterminal satellites of chimpanzee, bonobo and gorilla that human and orangutan lack).

Branch lengths reproduce published pairwise divergences (substitutions per aligned site):

    chimp-bonobo 0.4%, human-chimp 1.2%, human-gorilla 1.6%, human-orangutan 3.1%

    root -+- orangutan 1.55%
          +- HCG 0.75% -+- gorilla 0.8%
                        +- HC 0.2% -+- human 0.6%
                                    +- Pan 0.4% -+- chimpanzee 0.2%
                                                 +- bonobo 0.2%

Insertions per Mb per branch (``TE_RATES``) follow the real lineages' relative activity (human Alu most
active, orangutan Alu nearly silent but L1 active) and are scaled up by ``te_rate_scale`` (default 25x
real rates of ~1-2 lineage-specific Alus per Mb): a few-Mb genome then carries markers as sparse as a
whole genome does per window, so accuracy rises with context as in the Mamba paper's great-apes task.
Species-specific markers are sparse; the rest of a window is shared sequence that only differs by ~1%
point substitutions. Every base keeps its ancestral coordinate, so species are split by homologous region.
"""

from __future__ import annotations

import argparse
import gzip
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mambaseq.data.dna import N_ID, encode
from mambaseq.data.store import StoreWriter, TokenStore, fingerprint, store_is_current

from .maf import APE_ORDER, assign_splits
from .sources import VT_CHR20

# node -> (parent, branch length in substitutions per site), parents listed before children
APE_TREE: dict[str, tuple[str, float]] = {
    "orangutan": ("root", 0.0155),
    "HCG": ("root", 0.0075),
    "gorilla": ("HCG", 0.008),
    "HC": ("HCG", 0.002),
    "human": ("HC", 0.006),
    "Pan": ("HC", 0.004),
    "chimpanzee": ("Pan", 0.002),
    "bonobo": ("Pan", 0.002),
}
# lineage-specific insertions per Mb on each branch at te_rate_scale=1 (relative activity of real lineages)
TE_RATES: dict[str, dict[str, float]] = {
    #            alu   l1    satellite arrays
    "orangutan": {"alu": 0.3, "l1": 1.2, "sat": 0.0},
    "HCG": {"alu": 1.0, "l1": 0.6, "sat": 0.0},
    "gorilla": {"alu": 1.2, "l1": 0.8, "sat": 0.4},
    "HC": {"alu": 0.6, "l1": 0.3, "sat": 0.0},
    "human": {"alu": 2.0, "l1": 0.6, "sat": 0.0},
    "Pan": {"alu": 0.8, "l1": 0.4, "sat": 0.4},
    "chimpanzee": {"alu": 1.2, "l1": 0.5, "sat": 0.3},
    "bonobo": {"alu": 1.2, "l1": 0.5, "sat": 0.3},
}
SYNTHETIC_NOTE = "SIMULATED great-ape genomes from mambaseq's simulator (not real DNA)"


@dataclass(frozen=True)
class SimParams:
    length: int = 4_000_000          # ancestral genome length (bases, before insertions)
    background: str = "auto"         # auto (human chr20 if installed, else random) | chr20 | random
    background_offset: int = 5_000_000  # where in chr20 the ancestral stretch starts (N runs are skipped)
    cpg_factor: float = 10.0         # CpG transition rate relative to other sites
    indel_ratio: float = 0.1         # indel events per substitution
    te_rate_scale: float = 25.0      # multiplies TE_RATES (1 = real lineage-specific insertion rates)
    subfamily_divergence: float = 0.02  # diagnostic substitutions of a branch's TE subfamily vs its parent
    seed: int = 0


# --- sequence primitives ----------------------------------------------------------------------------
def _random_bases(rng: np.random.Generator, n: int, gc: float | np.ndarray) -> np.ndarray:
    """n bases (uint8 0..3) with GC fraction ``gc`` (scalar or per-base)."""
    u = rng.random(n)
    g = np.broadcast_to(np.asarray(gc, dtype=np.float64), (n,))
    at = (1 - g) / 2
    # A: [0, at) C: [at, at+g/2) G: [at+g/2, at+g) T: [at+g, 1)
    return ((u >= at).astype(np.uint8) + (u >= at + g / 2) + (u >= at + g)).astype(np.uint8)


def _mutate(rng: np.random.Generator, seq: np.ndarray, rate: float, cpg_factor: float = 1.0) -> np.ndarray:
    """Point substitutions, ``rate`` per site on average; with ``cpg_factor`` > 1 the C and G of CpG sites
    undergo transitions (C->T, G->A: methyl-cytosine deamination) that many times faster than other sites."""
    seq = seq.copy()
    n = seq.size
    if n == 0 or rate <= 0:
        return seq
    cpg = np.zeros(n, dtype=bool)
    if cpg_factor != 1.0:
        c_then_g = (seq[:-1] == 1) & (seq[1:] == 2)
        cpg[:-1] |= c_then_g
        cpg[1:] |= c_then_g
    n_cpg = int(cpg.sum())
    base_rate = rate * n / (n - n_cpg + cpg_factor * n_cpg)  # keeps the mean rate at ``rate``
    # CpG transitions: x ^ 2 maps C(1)->T(3) and G(2)->A(0)
    hit = np.flatnonzero(cpg)[rng.random(n_cpg) < min(base_rate * cpg_factor, 1.0)]
    seq[hit] ^= 2
    other = np.flatnonzero(~cpg)
    pos = other[rng.random(other.size) < base_rate]
    # x ^ 2 swaps A<->G and C<->T (transition); x ^ 1, x ^ 3 the two transversions
    seq[pos] ^= np.where(rng.random(pos.size) < 2 / 3, 2, np.where(rng.random(pos.size) < 0.5, 1, 3)).astype(np.uint8)
    return seq


def _insert(seq: np.ndarray, coord: np.ndarray, pos: np.ndarray, pieces: list[np.ndarray]):
    """Insert ``pieces[i]`` before ``pos[i]`` (one vectorised np.insert); inserted bases get coord -1."""
    if not pieces:
        return seq, coord
    lens = np.array([p.size for p in pieces])
    at = np.repeat(pos, lens)
    return np.insert(seq, at, np.concatenate(pieces)), np.insert(coord, at, -1)


def _indels(rng: np.random.Generator, seq: np.ndarray, coord: np.ndarray, n: int):
    """n small indels (half deletions, half insertions of random bases), lengths 1 + geometric, <= 30."""
    n_del = rng.binomial(n, 0.5)
    lens = np.minimum(rng.geometric(0.5, n_del), 30)
    starts = rng.integers(0, seq.size, n_del)
    delta = np.zeros(seq.size + 1, dtype=np.int32)
    np.add.at(delta, starts, 1)
    np.add.at(delta, np.minimum(starts + lens, seq.size), -1)
    keep = np.cumsum(delta[:-1]) == 0
    seq, coord = seq[keep], coord[keep]
    n_ins = n - n_del
    ins_lens = np.minimum(rng.geometric(0.5, n_ins), 30)
    pos = rng.integers(0, seq.size + 1, n_ins)
    return _insert(seq, coord, pos, [_random_bases(rng, int(k), 0.41) for k in ins_lens])


# --- transposable elements and satellites -----------------------------------------------------------
def _alu_consensus(rng: np.random.Generator) -> np.ndarray:
    """~300 bp: left monomer, A-rich linker, right monomer (a variant of the left, +31 bp), poly-A tail."""
    left = _random_bases(rng, 120, 0.62)
    right = np.concatenate([_mutate(rng, left, 0.15), _random_bases(rng, 31, 0.6)])
    linker = np.array([0, 0, 0, 0, 0, 3, 0, 1, 0], dtype=np.uint8)  # AAAAATACA
    return np.concatenate([left, linker, right, np.zeros(20, dtype=np.uint8)])


def _l1_consensus(rng: np.random.Generator) -> np.ndarray:
    """~6 kb AT-rich element ending in a poly-A tail (copies are mostly 5'-truncated)."""
    return np.concatenate([_random_bases(rng, 6000, 0.40), np.zeros(15, dtype=np.uint8)])


def _derive_subfamily(rng: np.random.Generator, parent: np.ndarray, divergence: float) -> np.ndarray:
    """A child subfamily: ``divergence`` diagnostic substitutions and one diagnostic 3-8 bp indel."""
    child = _mutate(rng, parent, divergence)
    at = int(rng.integers(10, child.size - 40))
    if rng.random() < 0.5:
        return np.delete(child, np.arange(at, at + int(rng.integers(3, 9))))
    return np.insert(child, at, _random_bases(rng, int(rng.integers(3, 9)), 0.5))


def _te_copy(rng: np.random.Generator, kind: str, consensus: np.ndarray) -> np.ndarray:
    """One young insertion: (5'-truncated for L1), < 1% diverged, with a 7-20 bp target-site duplication
    added by the caller."""
    if kind == "l1":
        keep = int(min(consensus.size, rng.exponential(1000) + 200))
        consensus = consensus[-keep:]
    return _mutate(rng, consensus, rng.uniform(0.0, 0.01))


def _satellite_array(rng: np.random.Generator, unit: np.ndarray) -> np.ndarray:
    copies = [_mutate(rng, unit, 0.02) for _ in range(int(rng.integers(8, 61)))]
    return np.concatenate(copies)


# --- background ------------------------------------------------------------------------------------
def _chr20_background(length: int, offset: int) -> np.ndarray:
    """``length`` bases of real human chr20 from ``offset`` on, N runs removed (raises if too short).

    Reads the FASTA's lines only as far as needed (a few MB of a 64-MB chromosome), not the whole record."""
    from .fasta import open_text

    parts, have, seen = [], 0, 0
    with open_text(VT_CHR20) as f:
        header = f.readline()
        if not header.startswith(">"):
            raise ValueError(f"{VT_CHR20}: not a FASTA file")
        for line in f:
            if line.startswith(">"):
                break
            line = line.strip()
            seen += len(line)
            if seen <= offset:
                continue
            ids = encode(line[max(0, len(line) - (seen - offset)):], where=str(VT_CHR20))
            ids = ids[ids != N_ID]
            parts.append(ids)
            have += ids.size
            if have >= length:
                break
    ids = np.concatenate(parts)[:length] if parts else np.zeros(0, np.uint8)
    if ids.size < length:
        raise ValueError(f"{VT_CHR20}: only {ids.size:,} N-free bases after offset {offset:,}; "
                         f"asked for length={length:,}")
    return ids


def _random_background(rng: np.random.Generator, length: int) -> np.ndarray:
    """Random sequence, GC ~41% +- 5% in 20-kb isochore-like blocks (used when chr20 is not installed)."""
    n_blocks = -(-length // 20_000)
    gc = np.clip(rng.normal(0.41, 0.05, n_blocks), 0.3, 0.6)
    return _random_bases(rng, length, np.repeat(gc, 20_000)[:length])


def background_kind(p: SimParams) -> str:
    if p.background not in ("auto", "chr20", "random"):
        raise ValueError(f"SimParams.background must be auto|chr20|random, got {p.background!r}")
    if p.background == "auto":
        return "chr20" if VT_CHR20.is_file() else "random"
    return p.background


def ancestral_genome(p: SimParams, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """-> (ancestral tokens (length,) uint8, [Alu consensus, L1 consensus]) on the chosen background."""
    kind = background_kind(p)
    if kind == "chr20":
        if not VT_CHR20.is_file():
            raise FileNotFoundError(f"{VT_CHR20}: not installed (apt-get install vt-examples) — "
                                    "or use SimParams(background='random')")
        seq = _chr20_background(p.length, p.background_offset)
    else:
        seq = _random_background(rng, p.length)
    return seq.astype(np.uint8), [_alu_consensus(rng), _l1_consensus(rng)]


# --- evolution ------------------------------------------------------------------------------------
def simulate_apes(p: SimParams = SimParams(), progress: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Evolve the ancestral genome down ``APE_TREE``.

    Returns {species: (tokens (L_s,) uint8 in 0..3, ancestral coordinate (L_s,) int64, -1 = inserted)}.
    """
    rng = np.random.default_rng(p.seed)
    root, (alu, l1) = ancestral_genome(p, rng)
    genomes = {"root": (root, np.arange(root.size, dtype=np.int64))}
    subfam = {"root": {"alu": alu, "l1": l1}}
    for node, (parent, b) in APE_TREE.items():
        t0 = time.perf_counter()
        seq, coord = genomes[parent]
        seq = _mutate(rng, seq, b, p.cpg_factor)
        seq, coord = _indels(rng, seq, coord, rng.poisson(p.indel_ratio * b * seq.size))
        subfam[node] = {k: _derive_subfamily(rng, v, p.subfamily_divergence) for k, v in subfam[parent].items()}
        sat_unit = _random_bases(rng, int(rng.integers(20, 181)), 0.45)
        pieces: list[np.ndarray] = []
        for kind, rate in TE_RATES[node].items():
            n = rng.poisson(rate * p.te_rate_scale * seq.size / 1e6)
            for _ in range(n):
                body = _satellite_array(rng, sat_unit) if kind == "sat" else _te_copy(rng, kind, subfam[node][kind])
                if kind != "sat" and rng.random() < 0.5:  # either strand
                    body = (3 - body)[::-1]
                pieces.append(body)
        pos = np.sort(rng.integers(1, seq.size, len(pieces)))
        order = rng.permutation(len(pieces))  # families interleaved along the genome
        pieces = [pieces[i] for i in order]
        # target-site duplication: the 7-20 bases before the insertion point are repeated after it
        tsd = [seq[max(q - int(rng.integers(7, 21)), 0):q] for q in pos]
        pieces = [np.concatenate([piece, dup]) for piece, dup in zip(pieces, tsd)]
        seq, coord = _insert(seq, coord, pos, pieces)
        genomes[node] = (seq, coord)
        if progress:
            print(f"  {node:>10}: {len(pieces):,} insertions, {seq.size:,} bases ({time.perf_counter() - t0:.1f} s)")
    return {sp: genomes[sp] for sp in APE_ORDER}


def pairwise_divergence(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """Fraction of differing bases over sites present (not inserted) in both genomes."""
    (sa, ca), (sb, cb) = a, b
    common, ia, ib = np.intersect1d(ca[ca >= 0], cb[cb >= 0], return_indices=True)
    ia, ib = np.flatnonzero(ca >= 0)[ia], np.flatnonzero(cb >= 0)[ib]
    return float((sa[ia] != sb[ib]).mean())


def prepare_simulated(out_dir: str | Path, params: SimParams = SimParams(), *, region_size: int = 200_000,
                      fractions: Sequence[float] = (0.8, 0.1, 0.1), progress: bool = True) -> TokenStore:
    """Simulate and write a labelled store split by ancestral region (as ``prepare_maf`` does)."""
    kind = background_kind(params)
    fp = fingerprint("simulated-v2", {**asdict(params), "background": kind, "region_size": region_size,
                                      "fractions": list(fractions)})
    if store_is_current(out_dir, fp):
        return TokenStore(out_dir)
    t0 = time.perf_counter()
    if progress:
        print(f"simulating 5 great-ape genomes from {params.length:,} ancestral bases "
              f"({'real human chr20' if kind == 'chr20' else 'random'} background) — {SYNTHETIC_NOTE}")
    genomes = simulate_apes(params, progress=progress)
    n_regions = -(-max(int(c.max()) + 1 for _, c in genomes.values()) // region_size)
    splits = assign_splits(n_regions, fractions, params.seed)
    note = f"{SYNTHETIC_NOTE}; ancestral background: " + (
        f"real human chr20 ({VT_CHR20.name}, Debian vt-examples)" if kind == "chr20" else "random sequence")
    src = {"kind": "simulated", "synthetic": True, "description": note, "params": asdict(params),
           "background": kind, "tree": APE_TREE, "te_rates_per_mb": TE_RATES, "region_size": region_size}
    with StoreWriter(out_dir, fp, source=src, synthetic=True, labels=list(APE_ORDER)) as w:
        for sp, (seq, coord) in genomes.items():
            ffill = np.maximum.accumulate(np.maximum(coord, 0))  # inserted bases join the preceding region
            cuts = np.searchsorted(ffill, np.arange(1, n_regions) * region_size)
            for r, part in enumerate(np.split(seq, cuts)):
                if part.size:
                    w.add(f"{sp}:{r:04d}", part.astype(np.uint8), label=sp, split=splits[r], region=r,
                          source_file="simulated")
    store = TokenStore(out_dir)
    if progress:
        print(f"wrote {store} ({n_regions} regions) in {time.perf_counter() - t0:.1f} s — {SYNTHETIC_NOTE}")
    return store


def export_fasta(genomes: dict[str, tuple[np.ndarray, np.ndarray]], out_dir: str | Path,
                 chunk: int = 500_000) -> dict[str, Path]:
    """Write one gzip FASTA per species (records ``simchr1``, ``simchr2``, ... of ``chunk`` ancestral
    bases each, so that record k is homologous across species). Returns {species: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for sp, (seq, coord) in genomes.items():
        ffill = np.maximum.accumulate(np.maximum(coord, 0))
        cuts = np.searchsorted(ffill, np.arange(chunk, int(ffill[-1]) + 1, chunk))
        path = out_dir / f"{sp}.simulated.fa.gz"
        with gzip.open(path, "wt") as f:
            for k, part in enumerate(np.split(seq, cuts), 1):
                text = np.frombuffer(b"ACGT", np.uint8)[part].tobytes().decode()
                f.write(f">simchr{k} {SYNTHETIC_NOTE}\n")
                f.write("\n".join(text[i : i + 80] for i in range(0, len(text), 80)) + "\n")
        paths[sp] = path
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mambaseq.data_prep.simulate", description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", help="output token-store directory")
    ap.add_argument("--length", type=int, default=SimParams.length)
    ap.add_argument("--background", default="auto", choices=("auto", "chr20", "random"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--divergence", action="store_true", help="print pairwise divergences and exit")
    args = ap.parse_args(argv)
    params = SimParams(length=args.length, background=args.background, seed=args.seed)
    if args.divergence:
        g = simulate_apes(params)
        for a, b in [("chimpanzee", "bonobo"), ("human", "chimpanzee"), ("human", "gorilla"), ("human", "orangutan")]:
            print(f"{a}-{b}: {100 * pairwise_divergence(g[a], g[b]):.2f}%")
        return 0
    if not args.out:
        ap.error("-o/--out is required unless --divergence")
    prepare_simulated(args.out, params)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
