"""Window datasets and splits over a token store (mambaseq.data.windows)."""

import numpy as np
import pytest
import torch

from mambaseq.data import Interval, RandomWindows, TiledWindows, TokenStore, read_bed, split_intervals, write_bed
from mambaseq.data import StoreWriter


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> TokenStore:
    """Five labelled sequences of random lengths; tokens encode their own position so slices are checkable."""
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("w") / "store"
    with StoreWriter(out, "fp", source={"kind": "test"}, labels=["a", "b"]) as w:
        for i, n in enumerate(rng.integers(3000, 9000, 5)):
            w.add(f"s{i}", rng.integers(0, 5, int(n)).astype(np.uint8), label="ab"[i % 2])
    return TokenStore(out)


@pytest.mark.parametrize("by", ["region", "sequence"])
def test_splits_disjoint_and_cover(store, by):
    splits = split_intervals(store, by=by, region_size=1000, seed=1)
    covered = {}
    for name, ivs in splits.items():
        for iv in ivs:
            covered.setdefault(iv.seq, []).append((iv.start, iv.end))
    for i, name in enumerate(store.names):
        spans = sorted(covered[name])
        assert spans[0][0] == 0 and spans[-1][1] == store.lengths[i]
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, no overlap
    assert all(splits[s] for s in ("train", "val", "test")) or by == "sequence"


def test_random_windows_stay_inside_their_split_and_sequence(store):
    splits = split_intervals(store, by="region", region_size=1500, seed=2)
    L = 700
    train = RandomWindows(store, splits["train"], L, seed=3)
    test_cover = {(iv.seq, p) for iv in splits["test"] for p in range(iv.start, iv.end)}
    for step in range(20):
        for k, off in train.picks(step, 8):
            iv = train.intervals[k]
            assert iv.start <= iv.start + off and iv.start + off + L <= iv.end  # inside one interval
            assert not any((iv.seq, p) in test_cover for p in range(iv.start + off, iv.start + off + L, 50))
        x, y = train.batch(step, 8)
        assert x.shape == (8, L) and x.dtype == torch.int64 and y.shape == (8,)
    # the batch is the exact memory-map slice
    k, off = train.picks(5, 1)[0]
    iv = train.intervals[k]
    np.testing.assert_array_equal(train.batch(5, 1)[0][0].numpy(), store.window(iv.seq, iv.start + off, iv.start + off + L))


def test_random_windows_deterministic_by_seed_and_step(store):
    ivs = split_intervals(store, by="sequence", seed=0)["train"]
    a, b = RandomWindows(store, ivs, 256, seed=7), RandomWindows(store, ivs, 256, seed=7)
    assert torch.equal(a.batch(11, 4)[0], b.batch(11, 4)[0])
    assert not torch.equal(a.batch(11, 4)[0], a.batch(12, 4)[0])
    assert not torch.equal(a.batch(11, 4)[0], RandomWindows(store, ivs, 256, seed=8).batch(11, 4)[0])
    r0, r1 = (RandomWindows(store, ivs, 256, seed=7, rank=r, world_size=2) for r in (0, 1))
    assert not torch.equal(r0.batch(3, 4)[0], r1.batch(3, 4)[0])  # ranks draw different windows


def test_balanced_labels(store):
    ivs = [Interval(n, 0, int(L)) for n, L in zip(store.names, store.lengths)]
    ds = RandomWindows(store, ivs, 100, seed=0, balance_labels=True)
    labels = torch.cat([ds.batch(s, 32)[1] for s in range(20)])
    assert abs(float(labels.float().mean()) - 0.5) < 0.1


def test_tiled_windows(store):
    ivs = [Interval("s1", 100, 2100), Interval("s2", 0, 1000)]
    ds = TiledWindows(store, ivs, 500)
    assert len(ds) == 4 + 2
    assert [tuple(ds.coords(i))[:3] for i in range(len(ds))] == [
        ("s1", 100, 600), ("s1", 600, 1100), ("s1", 1100, 1600), ("s1", 1600, 2100), ("s2", 0, 500), ("s2", 500, 1000)]
    x, y = ds[2]
    np.testing.assert_array_equal(x.numpy(), store.window("s1", 1100, 1600))
    batches = list(ds.batches(4))
    assert [b[0].shape[0] for b in batches] == [4, 2]
    assert len(TiledWindows(store, ivs, 100, max_per_label=3)) == 3 + 3


def test_window_longer_than_every_sequence(store):
    ivs = [Interval(n, 0, int(L)) for n, L in zip(store.names, store.lengths)]
    with pytest.raises(ValueError, match=r"longer than every sequence.*longest"):
        RandomWindows(store, ivs, int(store.lengths.max()) + 1)


def test_bad_interval(store):
    with pytest.raises(ValueError, match="outside sequence 's0'"):
        TiledWindows(store, [Interval("s0", 0, 10**9)], 10)
    with pytest.raises(ValueError, match="no sequence named 'nope'"):
        TiledWindows(store, [Interval("nope", 0, 10)], 10)


def test_bed_roundtrip(tmp_path, store):
    splits = split_intervals(store, by="region", region_size=2000, seed=0)
    ivs = [iv for s in splits.values() for iv in s]
    write_bed(ivs, tmp_path / "splits.bed")
    assert read_bed(tmp_path / "splits.bed") == ivs
    (tmp_path / "bad.bed").write_text("chr1\tx\t10\n")
    with pytest.raises(ValueError, match=r"bad.bed:1"):
        read_bed(tmp_path / "bad.bed")


# --- N policy: assembly gaps are never a cue (issue 10) ------------------------------------------------
from mambaseq.data.windows import NRuns  # noqa: E402

from seeding import rng_for  # noqa: E402


def test_n_runs_count_equals_brute_force(request):
    rng = rng_for(request)
    for _ in range(300):
        n = int(rng.integers(1, 400))
        tokens = np.where(rng.random(n) < rng.random(), 4, rng.integers(0, 4, n)).astype(np.uint8)
        runs = NRuns(tokens, chunk=int(rng.integers(1, 64)))  # runs crossing chunk edges included
        s = rng.integers(0, n + 1, 40)
        e = np.minimum(s + rng.integers(0, n + 1, 40), n)
        want = np.array([int((tokens[a:b] == 4).sum()) for a, b in zip(s, e)])
        np.testing.assert_array_equal(runs.count(s, e), want)


@pytest.fixture
def gappy_store(tmp_path):
    """Two labelled sequences of 2,000 bases; the second has an assembly gap of 300 N at 1,000 and one N at 100."""
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 4, 2000).astype(np.uint8) for _ in range(2)]
    seqs[1][1000:1300] = 4
    seqs[1][100] = 4
    with StoreWriter(tmp_path / "gappy", "fp", source={"kind": "test"}, labels=["a", "b"]) as w:
        for i, s in enumerate(seqs):
            w.add(f"s{i}", s, label="ab"[i], split="train")
    return TokenStore(tmp_path / "gappy")


def test_windows_over_max_n_fraction_are_left_out_and_the_rest_masked(gappy_store):
    ivs = [Interval("s0", 0, 2000), Interval("s1", 0, 2000)]
    tiled = TiledWindows(gappy_store, ivs, 200, max_n_fraction=0.01, mask_n=True)
    starts = [tiled.coords(i).start for i in range(len(tiled)) if tiled.coords(i).seq == "s1"]
    assert 1000 not in starts and 1200 not in starts  # the windows over the gap are left out
    assert tiled.n_left_out == 2 and 0 in starts  # [0, 200) holds one N (0.5%): kept, and masked
    x, _ = next(tiled.batches(len(tiled)))
    assert int((x == 4).sum()) == 0
    again, _ = next(tiled.batches(len(tiled)))
    assert torch.equal(x, again)  # masking is a function of the position
    unmasked = TiledWindows(gappy_store, ivs, 200, max_n_fraction=None)
    assert unmasked.n_left_out == 0 and int((next(unmasked.batches(100))[0] == 4).sum()) == 301


def test_random_windows_never_hold_more_n_than_allowed(gappy_store):
    ivs = [Interval("s1", 0, 2000)]
    rw = RandomWindows(gappy_store, ivs, 500, seed=3, max_n_fraction=0.002)
    for step in range(20):
        for k, off in rw.picks(step, 8):
            assert rw.n_runs(k).count(np.array([off]), np.array([off + 500]))[0] <= 1
    assert rw.with_length(250).max_n_fraction == 0.002
    with pytest.raises(ValueError, match="max_n_fraction"):
        RandomWindows(gappy_store, ivs, 1900, seed=0, max_n_fraction=0.0).batch(0, 1)
