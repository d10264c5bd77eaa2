"""Window datasets over a token store: random or tiled windows inside split intervals.

A split is a list of half-open intervals ``(seq, start, end)``; windows are taken strictly inside one
interval, so they never cross a sequence end, and disjoint intervals give train/test windows that share
no base. Random windows are a pure function of ``(seed, step)``, which makes resuming exact and lets
any number of data-parallel ranks draw disjoint streams.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch

from mambaseq.fileio import atomic_write_text

from .dna import N_ID
from .store import TokenStore

SPLITS = ("train", "val", "test")


class Interval(NamedTuple):
    """Half-open interval [start, end) of sequence ``seq`` (a store name), tagged with its split."""

    seq: str
    start: int
    end: int
    split: str = ""

    @property
    def length(self) -> int:
        return self.end - self.start


# --- region strings (samtools / UCSC / IGV convention) ---------------------------------------------
def parse_region(region: str, store: TokenStore, what: str = "region") -> Interval:
    """``SEQ:START-END`` (1-based, both ends inclusive, as ``samtools faidx`` and UCSC: ``chr1:1-4`` is the
    first four bases; commas allowed), ``SEQ:START`` (to the end of SEQ) or ``SEQ`` -> the half-open,
    0-based ``Interval(SEQ, START - 1, END)`` used everywhere else (BED, ``TokenStore.window``).

    START 0 (which does not exist in 1-based notation) is read as 1 with a warning, as samtools reads it.
    Raises ValueError naming ``what`` and the region when it is malformed, names no sequence of ``store``,
    has START > END, or ends beyond the sequence (its length is given).
    """
    text = str(region).strip()
    seq, _, span = text.rpartition(":") if ":" in text else (text, "", "")
    if span and seq not in store._by_name and text in store._by_name:  # a name that itself holds ':'
        seq, span = text, ""
    if seq not in store._by_name:
        raise ValueError(f"{what} {text!r}: no sequence {seq!r} in {store.path} (has e.g. {store.names[:3]})")
    length = int(store.lengths[store.resolve(seq)])
    try:
        start_s, sep, end_s = span.replace(",", "").partition("-")
        start = int(start_s) if span else 1
        end = int(end_s) if sep else length
    except ValueError:
        raise ValueError(f"{what} must be 'SEQ:START-END' (1-based, inclusive), 'SEQ:START' or 'SEQ', "
                         f"got {text!r}") from None
    if start == 0:  # 1-based notation has no position 0; samtools reads it as 1 (a BED start pasted in)
        warnings.warn(f"{what} {text!r}: positions are 1-based (the first base is 1); start 0 is read as 1, as "
                      f"samtools does (a BED start? BED is 0-based: add 1 to it)", UserWarning, stacklevel=2)
        start = 1
    if start > end:
        raise ValueError(f"{what} {text!r}: start {start} is after end {end}")
    if end > length:
        raise ValueError(f"{what} {text!r}: end {end} is beyond the end of {seq} ({length} bases, 1..{length})")
    return Interval(seq, start - 1, end)


def format_region(seq: str, start: int, end: int) -> str:
    """Half-open 0-based [start, end) -> ``SEQ:START-END`` in the 1-based inclusive convention."""
    return f"{seq}:{start + 1}-{end}"


# --- BED ------------------------------------------------------------------------------------------
def read_bed(path: str | Path) -> list[Interval]:
    """BED (chrom, start, end[, name]) -> intervals; the name column (if any) is the split."""
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            cols = line.rstrip("\n").split("\t")
            try:
                start, end = int(cols[1]), int(cols[2])
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{lineno}: expected 'chrom<TAB>start<TAB>end[<TAB>split]', got {line!r}")
            if not 0 <= start < end:
                raise ValueError(f"{path}:{lineno}: need 0 <= start < end, got {start}, {end}")
            out.append(Interval(cols[0], start, end, cols[3] if len(cols) > 3 else ""))
    return out


def write_bed(intervals: Sequence[Interval], path: str | Path) -> None:
    """Write intervals as BED (split in the name column), atomically."""
    atomic_write_text(path, "".join(f"{iv.seq}\t{iv.start}\t{iv.end}\t{iv.split}\n" for iv in intervals))


def read_split_bed(path: str | Path) -> dict[str, list[Interval]]:
    """train/val/test intervals from a BED whose 4th (name) column is the split; ValueError naming the
    file for any other split name."""
    out: dict[str, list[Interval]] = {s: [] for s in SPLITS}
    for iv in read_bed(path):
        if iv.split not in out:
            raise ValueError(f"{path}: split (4th column) must be train/val/test, got {iv.split!r} for {iv}")
        out[iv.split].append(iv)
    return out


def split_intervals(
    store: TokenStore,
    by: str = "region",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    region_size: int = 1 << 20,
    seed: int = 0,
) -> dict[str, list[Interval]]:
    """Disjoint train/val/test intervals.

    by="store": the split recorded per sequence at prep time (``split`` field, e.g. MAF regions).
    by="sequence": whole sequences are assigned to splits (seeded shuffle, ~``fractions`` of bases).
    by="region": every sequence is cut into ``region_size`` blocks, blocks assigned at random.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    out: dict[str, list[Interval]] = {s: [] for s in SPLITS}
    if by == "store":
        for r in store.records:
            if r.get("split") not in SPLITS:
                raise ValueError(f"{store.path}: sequence {r['name']!r} has no split recorded; use by='region'")
            out[r["split"]].append(Interval(r["name"], 0, r["length"], r["split"]))
        return out
    rng = np.random.default_rng(seed)
    edges = np.cumsum(fractions)[:-1]
    if by == "sequence":
        order = rng.permutation(len(store))
        cum = np.cumsum(store.lengths[order]) / store.lengths.sum()
        for i, c in zip(order, cum - store.lengths[order] / store.lengths.sum() / 2):  # split by midpoint
            s = SPLITS[int(np.searchsorted(edges, c, side="right"))]
            out[s].append(Interval(store.names[i], 0, int(store.lengths[i]), s))
        return out
    if by == "region":
        for name, length in zip(store.names, store.lengths.tolist()):
            starts = np.arange(0, length, region_size)
            which = np.searchsorted(edges, rng.random(len(starts)), side="right")
            for st, w in zip(starts.tolist(), which.tolist()):
                out[SPLITS[w]].append(Interval(name, st, min(st + region_size, length), SPLITS[w]))
        return out
    raise ValueError(f"by must be 'store', 'sequence' or 'region', got {by!r}")


# --- datasets --------------------------------------------------------------------------------------
class NRuns:
    """Runs of N (unknown bases, token 4) of one sequence, for O(log n) counts of N in any window.

    Assembly gaps are N runs whose lengths differ between species and assemblies, so they are a cue that
    has nothing to do with biology; window datasets use this to leave such windows out.
    """

    def __init__(self, tokens: np.ndarray, chunk: int = 1 << 24):
        edges, prev = [], False
        for c0 in range(0, tokens.size, chunk):  # chunked: a 250-Mb chromosome never makes a 250-MB mask
            isn = np.asarray(tokens[c0 : c0 + chunk]) == N_ID
            edges.append(np.flatnonzero(np.diff(np.concatenate([[prev], isn]).astype(np.int8))) + c0)
            prev = bool(isn[-1]) if isn.size else prev
        if prev:  # a run that reaches the end of the sequence
            edges.append(np.array([tokens.size]))
        flips = np.concatenate(edges) if edges else np.zeros(0, dtype=np.int64)
        self.starts, self.ends = flips[0::2].astype(np.int64), flips[1::2].astype(np.int64)  # runs alternate
        self.cum = np.concatenate([[0], np.cumsum(self.ends - self.starts)])

    def _before(self, x: np.ndarray) -> np.ndarray:
        """Number of N bases in [0, x) for each x: whole runs before the last run starting below x, plus
        that run's part below x."""
        k = np.searchsorted(self.starts, x, side="left")  # runs starting below x
        j = np.maximum(k - 1, 0)
        last = np.minimum(x, self.ends[j]) - self.starts[j]
        return np.where(k > 0, self.cum[j] + last, 0)

    def count(self, start: np.ndarray | int, end: np.ndarray | int) -> np.ndarray:
        """N bases in [start, end) (vectorised)."""
        if self.starts.size == 0:
            return np.zeros(np.shape(start), dtype=np.int64)
        return self._before(np.asarray(end)) - self._before(np.asarray(start))


class _WindowSource:
    def __init__(self, store: TokenStore, intervals: Sequence[Interval], length: int,
                 max_n_fraction: float | None = None, mask_n: bool = False):
        if length < 1:
            raise ValueError(f"window length must be >= 1, got {length}")
        if max_n_fraction is not None and not 0 <= max_n_fraction <= 1:
            raise ValueError(f"max_n_fraction must be in [0, 1] or None, got {max_n_fraction}")
        self.max_n_fraction, self.mask_n = max_n_fraction, bool(mask_n)
        self.max_n = None if max_n_fraction is None else int(max_n_fraction * length)
        self._n_runs: dict[int, NRuns] = {}
        if not intervals:
            raise ValueError(f"{store.path}: no intervals given for the window dataset")
        self.store, self.length = store, int(length)
        self.intervals = [Interval(iv.seq, int(iv.start), int(iv.end), iv.split) for iv in intervals]
        for iv in self.intervals:
            i = store.resolve(iv.seq)
            if not 0 <= iv.start < iv.end <= store.lengths[i]:
                raise ValueError(f"interval {iv} outside sequence {iv.seq!r} of length {store.lengths[i]}")
        self.seq_idx = np.array([store.resolve(iv.seq) for iv in self.intervals], dtype=np.int64)
        labels = store.label_ids()
        self.interval_label = labels[self.seq_idx]
        longest = max(iv.length for iv in self.intervals)
        if self.length > longest:
            raise ValueError(
                f"{store.path}: window length {self.length:,} is longer than every sequence/interval "
                f"(longest {longest:,}); use a shorter window"
            )

    def n_runs(self, k: int) -> NRuns:
        """N runs of interval k's sequence (computed once per sequence)."""
        i = int(self.seq_idx[k])
        if i not in self._n_runs:
            self._n_runs[i] = NRuns(self.store.get(i))
        return self._n_runs[i]

    def n_ok(self, k: int, offsets: np.ndarray) -> np.ndarray:
        """Which windows at ``offsets`` of interval k pass ``max_n_fraction`` (all when it is None)."""
        offsets = np.asarray(offsets, dtype=np.int64)
        if self.max_n is None:
            return np.ones(offsets.shape, dtype=bool)
        s = self.intervals[k].start + offsets
        return self.n_runs(k).count(s, s + self.length) <= self.max_n

    def _load(self, picks: Sequence[tuple[int, int]]) -> torch.Tensor:
        """[(interval index, start offset)] -> (b, length) int64 tokens, O(b * length).

        With ``mask_n`` every N becomes a base drawn from a generator seeded by the window's position, so
        the few N left in a window (``max_n_fraction``) carry no information and reloading is exact."""
        out = np.empty((len(picks), self.length), dtype=np.uint8)
        for row, (k, off) in enumerate(picks):
            iv = self.intervals[k]
            s = iv.start + off
            out[row] = self.store.get(int(self.seq_idx[k]))[s : s + self.length]
            if self.mask_n:
                isn = out[row] == N_ID
                if isn.any():
                    rng = np.random.default_rng([int(self.seq_idx[k]), s])
                    out[row][isn] = rng.integers(0, 4, int(isn.sum()), dtype=np.uint8)
        return torch.from_numpy(out).long()


class RandomWindows(_WindowSource):
    """Random windows of ``length`` inside the intervals; batch ``step`` is a pure function of (seed, step).

    Intervals are chosen in proportion to their number of valid start positions (uniform over all
    valid windows); with ``balance_labels`` a class is drawn uniformly first (then the same inside it).
    """

    def __init__(self, store: TokenStore, intervals: Sequence[Interval], length: int, seed: int = 0,
                 balance_labels: bool = False, rank: int = 0, world_size: int = 1,
                 max_n_fraction: float | None = None, mask_n: bool = False):
        super().__init__(store, intervals, length, max_n_fraction, mask_n)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        lengths = np.array([iv.length for iv in self.intervals], dtype=np.int64)
        self.n_starts = np.maximum(lengths - self.length + 1, 0)
        self.balance_labels = balance_labels
        self.classes = np.unique(self.interval_label[self.n_starts > 0])
        if balance_labels and (self.classes < 0).any():
            raise ValueError(f"{store.path}: balance_labels needs a label on every sequence")

    def picks(self, step: int, batch_size: int) -> list[tuple[int, int]]:
        """The (interval, offset) pairs of batch ``step`` for this rank."""
        rng = np.random.default_rng([self.seed, step, self.rank, self.world_size])
        out = []
        for _ in range(batch_size):
            w = self.n_starts.astype(np.float64)
            if self.balance_labels:
                w = w * (self.interval_label == rng.choice(self.classes))
            p = w / w.sum()
            for _attempt in range(10_000):  # windows over max_n_fraction are redrawn (same rng: exact)
                k = int(rng.choice(len(w), p=p))
                off = int(rng.integers(self.n_starts[k]))
                if self.max_n is None or self.n_ok(k, np.array([off]))[0]:
                    break
            else:
                raise ValueError(f"{self.store.path}: no window of {self.length:,} bases with at most "
                                 f"{self.max_n_fraction:.2%} N found in 10,000 draws; lower the window length "
                                 "or raise max_n_fraction")
            out.append((k, off))
        return out

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> tokens (batch_size, length) int64, labels (batch_size,) int64 (-1 if unlabelled)."""
        picks = self.picks(step, batch_size)
        labels = torch.from_numpy(self.interval_label[[k for k, _ in picks]].copy())
        return self._load(picks), labels

    def with_length(self, length: int) -> "RandomWindows":
        """Same intervals and seed, another window length (sequence-length warmup)."""
        return RandomWindows(self.store, self.intervals, length, self.seed, self.balance_labels,
                             self.rank, self.world_size, self.max_n_fraction, self.mask_n)


class TiledWindows(_WindowSource):
    """All windows at ``stride`` (default: non-overlapping) inside each interval, in order.

    ``max_per_label`` keeps a seeded, evenly-spread subset per class (fast, balanced evaluation).
    """

    def __init__(self, store: TokenStore, intervals: Sequence[Interval], length: int,
                 stride: int | None = None, max_per_label: int | None = None, seed: int = 0,
                 max_n_fraction: float | None = None, mask_n: bool = False):
        super().__init__(store, intervals, length, max_n_fraction, mask_n)
        stride = stride or self.length
        picks, self.n_left_out = [], 0  # windows over max_n_fraction are left out (and counted)
        for k, iv in enumerate(self.intervals):
            offs = np.arange(0, iv.length - self.length + 1, stride)
            ok = self.n_ok(k, offs)
            picks += [(k, int(o)) for o in offs[ok]]
            self.n_left_out += int((~ok).sum())
        if max_per_label is not None:
            rng = np.random.default_rng(seed)
            by_label: dict[int, list[tuple[int, int]]] = {}
            for p in picks:
                by_label.setdefault(int(self.interval_label[p[0]]), []).append(p)
            picks = []
            for lab in sorted(by_label):
                group = by_label[lab]
                if len(group) > max_per_label:
                    keep = np.sort(rng.choice(len(group), max_per_label, replace=False))
                    group = [group[i] for i in keep]
                picks.extend(group)
        self._picks = picks

    def __len__(self) -> int:
        return len(self._picks)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        k, off = self._picks[i]
        return self._load([(k, off)])[0], int(self.interval_label[k])

    @property
    def labels(self) -> np.ndarray:
        """(n,) int64 class of every window, in order."""
        return self.interval_label[[k for k, _ in self._picks]].astype(np.int64)

    def coords(self, i: int) -> Interval:
        """Where window i lies: (seq, start, end, split)."""
        k, off = self._picks[i]
        iv = self.intervals[k]
        return Interval(iv.seq, iv.start + off, iv.start + off + self.length, iv.split)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive batches: tokens (b, length) int64, labels (b,) int64."""
        for s in range(0, len(self._picks), batch_size):
            picks = self._picks[s : s + batch_size]
            labels = torch.from_numpy(self.interval_label[[k for k, _ in picks]].copy())
            yield self._load(picks), labels
