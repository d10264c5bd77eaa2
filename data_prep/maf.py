"""Multiple alignment (MAF) -> per-species token store split by alignment region.

    python -m mambaseq.data_prep.maf chr22.maf.gz -o data/apes_maf

The alignment is cut, in alignment order, into regions of about ``region_size`` columns (whole blocks,
never split). Each region goes wholly to train, val or test, and for every species the region becomes
one sequence ``species:region`` labelled with the species. So a test region was seen by no species
during training, and homologous DNA never straddles splits.

Per species the rows are de-gapped and upper-cased: case (soft-masking) and gap patterns differ between
species in real alignments and must not leak the label. Soft-masked runs can be kept in a separate mask
file (``keep_mask``) that the classifier never reads.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from mambaseq.data.dna import encode, soft_mask_runs
from mambaseq.data.store import StoreWriter, TokenStore, fingerprint, store_is_current

from .fasta import open_text

# MAF source-name prefixes (Ensembl Compara codes and UCSC assembly names) -> common names
SPECIES_NAMES = {
    "hsap": "human", "hg": "human", "homo_sapiens": "human",
    "ptro": "chimpanzee", "pantro": "chimpanzee", "pan_troglodytes": "chimpanzee",
    "ppan": "bonobo", "panpan": "bonobo", "pan_paniscus": "bonobo",
    "ggor": "gorilla", "gorgor": "gorilla", "gorilla_gorilla": "gorilla",
    "ppyg": "orangutan", "pabe": "orangutan", "ponabe": "orangutan", "pongo_abelii": "orangutan",
}
APE_ORDER = ("human", "chimpanzee", "bonobo", "gorilla", "orangutan")
_GAPS = np.frombuffer(b"-.", dtype=np.uint8)


def species_of(src: str) -> str:
    """'Hsap.22' -> 'human', 'panTro4.chr22' -> 'chimpanzee'; unknown prefixes are kept as they are."""
    prefix = src.split(".", 1)[0]
    key = re.sub(r"\d+$", "", prefix).lower()
    return SPECIES_NAMES.get(key, prefix)


def assign_splits(n_regions: int, fractions: Sequence[float], seed: int) -> list[str]:
    """Seeded assignment of regions to train/val/test, at least one region each when n >= 3."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be (train, val, test) summing to 1, got {fractions}")
    n_val = max(int(round(fractions[1] * n_regions)), 1 if n_regions >= 3 and fractions[1] > 0 else 0)
    n_test = max(int(round(fractions[2] * n_regions)), 1 if n_regions >= 3 and fractions[2] > 0 else 0)
    order = np.random.default_rng(seed).permutation(n_regions)
    out = ["train"] * n_regions
    for i in order[:n_test]:
        out[i] = "test"
    for i in order[n_test : n_test + n_val]:
        out[i] = "val"
    return out


def prepare_maf(
    maf_path: str | Path,
    out_dir: str | Path,
    *,
    region_size: int = 100_000,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    species: Sequence[str] | None = None,
    keep_mask: bool = False,
    progress: bool = True,
) -> TokenStore:
    """Prepare a labelled, region-split token store from a MAF (plain or gzip).

    Args:
        maf_path: the alignment; rows are named ``<species code>.<chrom>``.
        out_dir: store directory (atomic; a no-op when already prepared from the same file/params).
        region_size: alignment columns per region (whole blocks are kept together).
        fractions: train/val/test share of regions.
        species: keep only these common names (default: every species in the file).
        keep_mask: keep lower-case runs as a separate soft-mask (never in the tokens).
    """
    from Bio import AlignIO  # here, not at the top: reading prepared stores must not need Biopython

    maf_path = Path(maf_path)
    params = {"region_size": region_size, "fractions": list(fractions), "seed": seed,
              "species": list(species) if species else None, "keep_mask": keep_mask}
    fp = fingerprint("maf", params, [maf_path])
    if store_is_current(out_dir, fp):
        return TokenStore(out_dir)
    t0 = time.perf_counter()
    # region -> species -> [de-gapped raw byte arrays]; plus the reference coordinates of each region
    regions: list[dict[str, list[np.ndarray]]] = []
    ref_span: list[list] = []
    columns = 0
    n_blocks = 0
    with open_text(maf_path) as handle:
        try:
            for n_blocks, aln in enumerate(tqdm(AlignIO.parse(handle, "maf"), desc=f"read {maf_path.name}",
                                                unit=" blocks", disable=not progress), 1):
                r = min(columns // region_size, len(regions))  # a block longer than a region opens one region
                if r == len(regions):
                    regions.append({})
                    ref_span.append([None, None, None])
                columns += aln.get_alignment_length()
                for row_i, rec in enumerate(aln):
                    sp = species_of(rec.id)
                    if species and sp not in species:
                        continue
                    raw = np.frombuffer(str(rec.seq).encode("latin-1"), dtype=np.uint8)
                    raw = raw[~np.isin(raw, _GAPS)]
                    # validate now so that the error names the block and row
                    encode(raw, where=f"{maf_path} block {n_blocks} row {rec.id}")
                    regions[r].setdefault(sp, []).append(raw)
                    if row_i == 0:  # the reference (first) row gives human-readable coordinates
                        start = rec.annotations.get("start", 0)
                        span = ref_span[r]
                        span[0] = span[0] or rec.id
                        span[1] = start if span[1] is None else span[1]
                        span[2] = start + rec.annotations.get("size", len(raw))
        except ValueError as e:
            if str(maf_path) in str(e):
                raise
            raise ValueError(f"{maf_path}: not a readable MAF alignment ({e})") from e
    if not regions:
        raise ValueError(f"{maf_path}: no alignment blocks found (is it a MAF file?)")
    present = sorted({sp for reg in regions for sp in reg},
                     key=lambda s: (APE_ORDER.index(s) if s in APE_ORDER else len(APE_ORDER), s))
    if species:
        missing = set(species) - set(present)
        if missing:
            raise ValueError(f"{maf_path}: species {sorted(missing)} not found (present: {present})")
    splits = assign_splits(len(regions), fractions, seed)
    src = {"kind": "maf", "file": str(maf_path), "synthetic": False, "n_blocks": n_blocks,
           "alignment_columns": columns, "region_size": region_size,
           "description": "real multi-species alignment; de-gapped, upper-cased per species"}
    with StoreWriter(out_dir, fp, source=src, synthetic=False, labels=present) as w:
        for r, reg in enumerate(regions):
            for sp in present:
                if sp not in reg:
                    continue
                raw = np.concatenate(reg[sp])
                tokens = encode(raw)
                w.add(f"{sp}:{r:04d}", tokens, mask_runs=soft_mask_runs(raw) if keep_mask else None,
                      label=sp, split=splits[r], region=r, ref=ref_span[r], source_file=str(maf_path))
    store = TokenStore(out_dir)
    if progress:
        print(f"wrote {store} ({len(regions)} regions: {splits.count('train')} train, {splits.count('val')} val, "
              f"{splits.count('test')} test) in {time.perf_counter() - t0:.1f} s")
    return store


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mambaseq.data_prep.maf", description=__doc__.split("\n\n")[0])
    ap.add_argument("maf", help="MAF alignment (plain or .gz)")
    ap.add_argument("-o", "--out", required=True, help="output token-store directory")
    ap.add_argument("--region-size", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mask", action="store_true", help="keep soft-masked runs as a separate mask")
    args = ap.parse_args(argv)
    prepare_maf(args.maf, args.out, region_size=args.region_size, seed=args.seed, keep_mask=args.mask)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
