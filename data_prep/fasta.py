"""FASTA (plain or gzip) -> token store.

    python -m mambaseq.data_prep.fasta genome.fa.gz -o data/genome [--mask]

Parsing uses Biopython's FASTA parser; encoding is one numpy table lookup per record (IUPAC ambiguity
codes -> N, case dropped; lower-case runs optionally kept as a separate soft-mask file). The store is
written atomically and re-running on unchanged inputs does nothing.
"""

from __future__ import annotations

import argparse
import gzip
import io
import time
import zlib
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from tqdm import tqdm

from mambaseq.data.dna import encode, soft_mask_runs
from mambaseq.data.store import StoreWriter, TokenStore, fingerprint, store_is_current



def open_text(path: str | Path) -> io.TextIOBase:
    """Open plain or gzip text (detected by magic bytes, not the suffix). latin-1 never fails to
    decode, so binary junk reaches the validator and gets a proper message."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="latin-1", newline=None)
    return open(path, encoding="latin-1", newline=None)


def read_fasta(path: str | Path) -> Iterator[tuple[str, str]]:
    """Yield (record id, raw sequence text) from a FASTA file, validating its shape.

    Raises ValueError naming the file when it is not FASTA (text before the first '>' or no record),
    when a record is empty, when two records share an id, or when gzip data are damaged: truncated (an
    interrupted download), corrupt (CRC or deflate errors), or followed by bytes that are not gzip (e.g.
    1000 Genomes' hs37d5.fa.gz; ``zcat`` warns "trailing garbage ignored"; strip them or re-compress).
    """
    path = Path(path)
    try:
        yield from _read_fasta(path)
    except EOFError as e:
        raise ValueError(f"{path}: truncated gzip file (the compressed stream ends early: {e}); an interrupted "
                         f"download or copy?") from None
    except gzip.BadGzipFile as e:
        if "Not a gzipped file" in str(e):  # raised where a next gzip member should start
            raise ValueError(f"{path}: bytes after the end of the gzip data are not gzip (trailing garbage, "
                             f"{e}); zcat ignores them with a warning: strip them or re-compress the file") from None
        raise ValueError(f"{path}: corrupt gzip file ({e})") from None
    except zlib.error as e:
        raise ValueError(f"{path}: corrupt gzip file ({e})") from None


def _read_fasta(path: Path) -> Iterator[tuple[str, str]]:
    from Bio.SeqIO.FastaIO import SimpleFastaParser  # only parsing needs Biopython

    with open_text(path) as handle:
        first = ""
        for line in handle:  # skip leading blank lines only
            if line.strip():
                first = line
                break
        if not first.startswith(">"):
            shown = first[:40].rstrip("\n")
            raise ValueError(f"{path}: not a FASTA file (first non-blank line should start with '>', got {shown!r})")
        seen: set[str] = set()
        n = 0
        for title, seq in SimpleFastaParser(_chain(first, handle)):
            name = title.split(None, 1)[0] if title.strip() else ""
            if not name:
                raise ValueError(f"{path}: record #{n + 1} has an empty header line")
            if name in seen:
                raise ValueError(f"{path}: duplicate record id {name!r}")
            if not seq:
                raise ValueError(f"{path}: record {name!r} is empty (no sequence after its header)")
            seen.add(name)
            n += 1
            yield name, seq
        if n == 0:
            raise ValueError(f"{path}: no FASTA records found")


def _chain(first: str, rest: io.TextIOBase) -> Iterator[str]:
    yield first
    yield from rest


def prepare_fasta(
    inputs: Sequence[str | Path] | Mapping[str, str | Path | Sequence[str | Path]],
    out_dir: str | Path,
    *,
    keep_mask: bool = False,
    min_length: int = 0,
    splits: Mapping[str, Sequence[str]] | None = None,
    source: Mapping[str, object] | None = None,
    progress: bool = True,
) -> TokenStore:
    """Prepare a token store from FASTA files.

    Args:
        inputs: a list of FASTA paths (unlabelled), or {label: path or [paths]} (e.g. one species per
            label; record names become ``label/record``).
        out_dir: the store directory (replaced atomically; left alone when already current).
        keep_mask: also record lower-case (soft-masked) runs as a separate mask per sequence.
        min_length: skip records shorter than this (0 keeps everything).
        splits: {"val": [record ids], "test": [record ids]} (ids without the label prefix, e.g. held-out
            chromosomes ``{"test": ["chr22"]}``); every other record is "train". None records no split.
            An id that matches no record of any file raises UnmatchedSplitError (a ValueError) listing
            the ids there are; no store is written.
        source: extra JSON fields for the index ``source`` entry (e.g. ``{"synthetic": False}``).
    Returns:
        the opened TokenStore.
    """
    if isinstance(inputs, Mapping):
        groups = {str(k): [Path(p) for p in ([v] if isinstance(v, (str, Path)) else v)] for k, v in inputs.items()}
        labels: list[str] | None = list(groups)
    else:
        groups = {"": [Path(p) for p in inputs]}
        labels = None
    files = [p for ps in groups.values() for p in ps]
    if not files:
        raise ValueError("prepare_fasta: no input files given")
    for p in files:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such FASTA file")
    split_of = {name: sp for sp, names in (splits or {}).items() for name in names}
    if splits and not set(splits) <= {"train", "val", "test"}:
        raise ValueError(f"splits keys must be train/val/test, got {sorted(splits)}")
    params = {"labels": labels, "keep_mask": keep_mask, "min_length": min_length, "source": dict(source or {}),
              "splits": {k: list(v) for k, v in (splits or {}).items()}}
    fp = fingerprint("fasta", params, files)
    if store_is_current(out_dir, fp):
        return TokenStore(out_dir)
    t0 = time.perf_counter()
    src = {"kind": "fasta", "files": [str(p) for p in files], **dict(source or {})}
    total_bytes = sum(p.stat().st_size for p in files)
    seen: list[str] = []  # record ids in file order
    with StoreWriter(out_dir, fp, source=src, synthetic=bool(src.get("synthetic", False)), labels=labels) as w, \
            tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"prepare {Path(out_dir).name}",
                 disable=not progress) as bar:
        for label, paths in groups.items():
            for path in paths:
                for name, seq in read_fasta(path):
                    seen.append(name)
                    raw = seq.encode("latin-1")
                    tokens = encode(raw, where=f"{path} record {name!r}")
                    bar.update(len(raw))
                    if tokens.size < min_length:
                        continue
                    fields = {"source_file": str(path)}
                    if label:
                        fields["label"] = label
                    if splits is not None:
                        fields["split"] = split_of.get(name, "train")
                    w.add(f"{label}/{name}" if label else name, tokens,
                          mask_runs=soft_mask_runs(raw) if keep_mask else None, **fields)
            bar.update(0)
        _check_split_names(splits or {}, seen, files)  # before the store is committed
    store = TokenStore(out_dir)
    if progress:
        print(f"wrote {store} in {time.perf_counter() - t0:.1f} s")
    return store


class UnmatchedSplitError(ValueError):
    """Record ids named in ``splits`` that no FASTA record has; ``split`` says which split named them."""

    def __init__(self, message: str, split: str):
        super().__init__(message)
        self.split = split


def _check_split_names(splits: Mapping[str, Sequence[str]], seen: Sequence[str], files: Sequence[Path]) -> None:
    """UnmatchedSplitError when a split names a record id that none of ``files`` has (e.g. ``3`` for ``chr3``),
    listing the first 20 record ids there are."""
    have = set(seen)
    for split, names in splits.items():
        unmatched = [n for n in names if n not in have]
        if unmatched:
            ids = list(dict.fromkeys(seen))
            shown = ", ".join(ids[:20]) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
            raise UnmatchedSplitError(f"{split} record ids {unmatched} match no FASTA record of "
                                      f"{[str(p) for p in files]}; record ids there: {shown}", split)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mambaseq.data_prep.fasta", description=__doc__.split("\n\n")[0])
    ap.add_argument("fasta", nargs="+", help="FASTA files (plain or .gz); LABEL=PATH gives the records a label")
    ap.add_argument("-o", "--out", required=True, help="output token-store directory")
    ap.add_argument("--mask", action="store_true", help="keep soft-masked (lower-case) runs as a separate mask")
    ap.add_argument("--min-length", type=int, default=0)
    args = ap.parse_args(argv)
    if all("=" in a for a in args.fasta):
        inputs: dict[str, list[str]] = {}
        for a in args.fasta:
            k, v = a.split("=", 1)
            inputs.setdefault(k, []).append(v)
        prepare_fasta(inputs, args.out, keep_mask=args.mask, min_length=args.min_length)
    else:
        prepare_fasta(args.fasta, args.out, keep_mask=args.mask, min_length=args.min_length)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
