"""Seeded great-ape genome simulator (SYNTHETIC data, labelled as such in every output).

A random ancestral genome (GC content varying in ~41% +- 5% isochore-like blocks, ~35% interspersed
repeats from a few ancestral families plus microsatellites) evolves down the great-ape tree with point
substitutions (transition/transversion 2:1) and small indels (1 per 10 substitutions, geometric lengths).
Branch lengths reproduce published pairwise divergences (substitutions per aligned site):

    chimp-bonobo 0.4%, human-chimp 1.2%, human-gorilla 1.6%, human-orangutan 3.1%

    root -+- orangutan 1.55%
          +- HCG 0.75% -+- gorilla 0.8%
                        +- HC 0.2% -+- human 0.6%
                                    +- Pan 0.4% -+- chimpanzee 0.2%
                                                 +- bonobo 0.2%

Each lineage also gains insertions of its own young repeat subfamily (as real lineages do: human-specific
AluY, etc.). Their rate (``lineage_repeat_rate``) is a knob: the default is far above real rates so that a
small genome carries a learnable species signal; set it to 0 for substitutions and indels alone.
Every base keeps its ancestral coordinate, so species are split by homologous region, like the MAF data.
"""

from __future__ import annotations

import argparse
import gzip
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mambaseq.data.store import TokenStore

from .maf import APE_ORDER, assign_splits
from .store import StoreWriter, fingerprint, store_is_current

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
SYNTHETIC_NOTE = "SYNTHETIC great-ape genomes from mambaseq's simulator (not real DNA)"


@dataclass(frozen=True)
class SimParams:
    length: int = 2_000_000          # ancestral genome length (before repeats are added)
    gc_mean: float = 0.41
    gc_sd: float = 0.05
    gc_block: int = 20_000           # bases per GC-content block
    repeat_fraction: float = 0.35    # ancestral interspersed repeats + microsatellites
    indel_ratio: float = 0.1         # indel events per substitution
    lineage_repeat_rate: float = 0.02  # lineage-specific insertions per base per unit branch length
    seed: int = 0


def _random_bases(rng: np.random.Generator, n: int, gc: float | np.ndarray) -> np.ndarray:
    """n bases (uint8 0..3) with GC fraction ``gc`` (scalar or per-base)."""
    u = rng.random(n)
    g = np.broadcast_to(np.asarray(gc, dtype=np.float64), (n,))
    at = (1 - g) / 2
    # A: [0, at) C: [at, at+g/2) G: [at+g/2, at+g) T: [at+g, 1)
    return ((u >= at).astype(np.uint8) + (u >= at + g / 2) + (u >= at + g)).astype(np.uint8)


def _mutate(rng: np.random.Generator, seq: np.ndarray, rate: float) -> np.ndarray:
    """Point substitutions at ``rate`` per site (transitions twice as likely as transversions)."""
    seq = seq.copy()
    n = rng.poisson(rate * seq.size)
    pos = rng.integers(0, seq.size, n)
    # x^2 swaps A<->G and C<->T (transition); x^1, x^3 give the two transversions
    seq[pos] ^= np.where(rng.random(n) < 2 / 3, 2, np.where(rng.random(n) < 0.5, 1, 3)).astype(np.uint8)
    return seq


def _insert(seq: np.ndarray, coord: np.ndarray, pos: np.ndarray, pieces: list[np.ndarray]):
    """Insert ``pieces[i]`` before ``pos[i]`` (vectorised via np.insert); inserted bases get coord -1."""
    if not pieces:
        return seq, coord
    lens = np.array([p.size for p in pieces])
    at = np.repeat(pos, lens)
    return np.insert(seq, at, np.concatenate(pieces)), np.insert(coord, at, -1)


def _indels(rng: np.random.Generator, seq: np.ndarray, coord: np.ndarray, n: int):
    """n small indels (half deletions, half random insertions), lengths 1 + geometric, <= 30."""
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


def _repeat_family(rng: np.random.Generator, kind: str) -> np.ndarray:
    if kind == "alu":  # ~300 bp, GC-rich, poly-A tail
        return np.concatenate([_random_bases(rng, 280, 0.55), np.zeros(20, dtype=np.uint8)])
    return _random_bases(rng, int(rng.integers(1000, 6000)), 0.38)  # L1-like, AT-rich


def ancestral_genome(p: SimParams, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """-> (ancestral tokens, [repeat family consensus]); repeats make up ~``repeat_fraction``."""
    n_blocks = -(-p.length // p.gc_block)
    gc = np.clip(rng.normal(p.gc_mean, p.gc_sd, n_blocks), 0.3, 0.6)
    seq = _random_bases(rng, p.length, np.repeat(gc, p.gc_block)[: p.length])
    families = [_repeat_family(rng, k) for k in ("alu", "alu", "l1", "l1", "l1")]
    target = int(p.repeat_fraction * p.length / (1 - p.repeat_fraction))
    pieces, total = [], 0
    while total < target:
        r = rng.random()
        if r < 0.1:  # microsatellite: a 1-6 bp unit repeated
            unit = _random_bases(rng, int(rng.integers(1, 7)), 0.4)
            piece = np.tile(unit, int(rng.integers(5, 40)))
        else:  # an interspersed copy, 5'-truncated, diverged 5-20% from its family
            fam = families[int(rng.integers(len(families)))]
            piece = _mutate(rng, fam[int(rng.integers(0, fam.size // 2)) if fam.size > 400 else 0:],
                            rng.uniform(0.05, 0.2))
        pieces.append(piece)
        total += piece.size
    pos = np.sort(rng.integers(0, p.length + 1, len(pieces)))
    seq, _ = _insert(seq, np.zeros(seq.size, dtype=np.int64), pos, pieces)
    return seq, families


def simulate_apes(p: SimParams = SimParams()) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Evolve the ancestral genome down ``APE_TREE``.

    Returns {species: (tokens (L_s,) uint8 in 0..3, ancestral coordinate (L_s,) int64, -1 = inserted)}.
    """
    rng = np.random.default_rng(p.seed)
    root, families = ancestral_genome(p, rng)
    genomes = {"root": (root, np.arange(root.size, dtype=np.int64))}
    subfamily = {"root": families[0]}
    for node, (parent, b) in APE_TREE.items():
        seq, coord = genomes[parent]
        seq = _mutate(rng, seq, b)
        seq, coord = _indels(rng, seq, coord, rng.poisson(p.indel_ratio * b * seq.size))
        # this lineage's young repeat subfamily: 3% from its parent's, copies ~1% diverged
        subfamily[node] = _mutate(rng, subfamily[parent], 0.03)
        n_rep = rng.poisson(p.lineage_repeat_rate * b * seq.size)
        pos = np.sort(rng.integers(0, seq.size + 1, n_rep))
        seq, coord = _insert(seq, coord, pos, [_mutate(rng, subfamily[node], 0.01) for _ in range(n_rep)])
        genomes[node] = (seq, coord)
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
    fp = fingerprint("simulated", {**asdict(params), "region_size": region_size, "fractions": list(fractions)})
    if store_is_current(out_dir, fp):
        return TokenStore(out_dir)
    t0 = time.perf_counter()
    genomes = simulate_apes(params)
    n_regions = -(-max(int(c.max()) + 1 for _, c in genomes.values()) // region_size)
    splits = assign_splits(n_regions, fractions, params.seed)
    src = {"kind": "simulated", "synthetic": True, "description": SYNTHETIC_NOTE, "params": asdict(params),
           "tree": APE_TREE, "region_size": region_size}
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
        path = out_dir / f"{sp}.synthetic.fa.gz"
        with gzip.open(path, "wt") as f:
            for k, part in enumerate(np.split(seq, cuts), 1):
                text = np.frombuffer(b"ACGT", np.uint8)[part].tobytes().decode()
                f.write(f">simchr{k} {SYNTHETIC_NOTE}\n")
                f.write("\n".join(text[i : i + 80] for i in range(0, len(text), 80)) + "\n")
        paths[sp] = path
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mambaseq.data_prep.simulate", description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", required=True, help="output token-store directory")
    ap.add_argument("--length", type=int, default=SimParams.length)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--divergence", action="store_true", help="print pairwise divergences and exit")
    args = ap.parse_args(argv)
    params = SimParams(length=args.length, seed=args.seed)
    if args.divergence:
        g = simulate_apes(params)
        for a, b in [("chimpanzee", "bonobo"), ("human", "chimpanzee"), ("human", "gorilla"), ("human", "orangutan")]:
            print(f"{a}-{b}: {100 * pairwise_divergence(g[a], g[b]):.2f}%")
        return 0
    prepare_simulated(args.out, params)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
