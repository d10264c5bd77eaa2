"""Pretraining data and measurements: gap-free region splits, sharded batches, per-position loss, k-mer stats."""

import math

import numpy as np
import pytest
import torch

from mambaseq import MambaConfig
from mambaseq.model import MambaLMHeadModel
from mambaseq.data import ShardedLMBatches, StoreWriter, acgt_runs, genome_splits
from mambaseq.data.kmers import compare_to_real, gc_content, js_divergence, kmer_spectrum
from mambaseq.data_prep.pretrain import prepare_genome
from mambaseq.training import lm_loss
from mambaseq.training.evaluation import bits_per_token, eval_loop, next_token_bits, position_buckets


def lm_bits(model, batches):
    return bits_per_token(eval_loop(model, batches, next_token_bits, torch.device("cpu"), "fp32"))


def write_genome(path, seed=0, n_records=2, length=40_000, gap=(10_000, 10_500)):
    """A FASTA with motif-rich random DNA, an assembly gap (N run) and a few lone Ns."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for r in range(n_records):
            motif = rng.integers(0, 4, 50)
            seq = rng.integers(0, 4, length)
            for s in rng.integers(0, length - 50, length // 500):
                seq[s: s + 50] = motif
            text = np.frombuffer(b"ACGT", np.uint8)[seq].copy()
            text[gap[0]: gap[1]] = ord("N")
            text[rng.integers(0, length, 5)] = ord("N")
            f.write(f">chr{r + 1}\n")
            f.write(text.tobytes().decode().lower() if r else text.tobytes().decode())  # case must not matter
            f.write("\n")
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("genome")
    fa = write_genome(d / "g.fa")
    return prepare_genome({"store": None, "source": "fasta", "fasta": str(fa), "out_root": str(d / "data"),
                           "seed": 0, "sim_length": 0}, progress=False)


@pytest.mark.parametrize("tokens,min_gap,expected", [
    ([0, 1, 4, 2, 3], 1, [[0, 2], [3, 5]]),
    ([0, 1, 4, 2, 3], 2, [[0, 5]]),
    ([4, 4, 0, 4, 4, 4, 1], 3, [[0, 3], [6, 7]]),
    ([0, 1, 2], 1, [[0, 3]]),
    ([4, 4], 1, []),
], ids=["lone-N-cuts", "lone-N-kept", "long-gap-cuts", "no-N", "all-N"])
def test_acgt_runs(tokens, min_gap, expected):
    assert acgt_runs(np.array(tokens, dtype=np.uint8), min_gap).tolist() == expected


def test_splits_disjoint_gap_free_nonempty(store):
    sp = genome_splits(store, region_size=8192, fractions=(0.8, 0.1, 0.1), seed=3, min_gap=1)
    covered = {}
    for name, ivs in sp.items():
        assert ivs, f"{name} split is empty"
        for iv in ivs:
            toks = np.asarray(store.window(iv.seq, iv.start, iv.end))
            assert (toks < 4).all(), f"{iv} contains N"
            assert iv.split == name
            covered.setdefault(iv.seq, []).append((iv.start, iv.end))
    for seq, spans in covered.items():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"overlapping intervals on {seq}"
    assert sp == genome_splits(store, 8192, (0.8, 0.1, 0.1), seed=3)  # deterministic
    assert sp != genome_splits(store, 8192, (0.8, 0.1, 0.1), seed=4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(region_size=1 << 20, fractions=(0.8, 0.1, 0.1)), "cannot make 3 non-empty splits"),
    (dict(region_size=8192, fractions=(0.8, 0.1)), "three non-negative numbers"),
    (dict(region_size=0, fractions=(0.8, 0.1, 0.1)), "region_size must be >= 1"),
], ids=["region-too-large", "two-fractions", "zero-region"])
def test_split_errors(store, kwargs, match):
    with pytest.raises(ValueError, match=match):
        genome_splits(store, **kwargs)


@pytest.mark.parametrize("world", [2, 4], ids=["world2", "world4"])
def test_shards_union_is_the_single_process_batch(store, world):
    train = genome_splits(store, 8192, (0.8, 0.1, 0.1))["train"]
    one = ShardedLMBatches(store, train, seed=5)(step=7, seq_len=100, local_batch=8)
    shards = [ShardedLMBatches(store, train, seed=5, rank=r, world_size=world)(7, 100, 8 // world)
              for r in range(world)]
    assert one.shape == (8, 101) and one.dtype == torch.int64
    assert torch.equal(torch.cat(shards), one)
    assert (one < 4).all()  # no gap ever reaches the model
    assert not torch.equal(one, ShardedLMBatches(store, train, seed=5)(8, 100, 8))  # fresh windows per step


def test_rc_augment_flips_rows_deterministically(store):
    train = genome_splits(store, 8192, (0.8, 0.1, 0.1))["train"]
    plain = ShardedLMBatches(store, train, seed=1)(3, 50, 16)
    rc = ShardedLMBatches(store, train, seed=1, rc_augment=True)(3, 50, 16)
    comp = torch.tensor([3, 2, 1, 0])
    flipped = [i for i in range(16) if not torch.equal(plain[i], rc[i])]
    assert 0 < len(flipped) < 16
    for i in flipped:
        assert torch.equal(rc[i], comp[plain[i]].flip(0))
    assert torch.equal(rc, ShardedLMBatches(store, train, seed=1, rc_augment=True)(3, 50, 16))


def test_next_token_bits_match_lm_loss_and_buckets():
    torch.manual_seed(0)
    model = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=10)).eval()
    x = torch.randint(0, 4, (3, 33))
    stats = lm_bits(model, [x[:2], x[2:]])
    with torch.no_grad():
        loss, _ = lm_loss(model, x)
    assert stats["bits_per_base"] == pytest.approx(float(loss) / math.log(2), rel=1e-5)
    assert stats["n_tokens"] == 96 and stats["count"].tolist() == [3.0] * 32
    rows = position_buckets(stats["bits_sum"], stats["count"])
    assert [(r["context_from"], r["context_to"]) for r in rows] == [(1, 1), (2, 3), (4, 7), (8, 15), (16, 32)]
    assert sum(r["n_predictions"] for r in rows) == 96
    assert rows[1]["bits_per_base"] == pytest.approx(stats["bits_sum"][1:3].sum() / 6)


def test_kmer_statistics():
    rng = np.random.default_rng(0)
    a = [rng.integers(0, 4, 5000).astype(np.uint8)]
    assert js_divergence(kmer_spectrum(a, 3), kmer_spectrum(a, 3)) == pytest.approx(0.0, abs=1e-12)
    at, gc = [np.array([0, 3] * 100, np.uint8)], [np.array([1, 2] * 100, np.uint8)]
    assert js_divergence(kmer_spectrum(at, 2), kmer_spectrum(gc, 2)) == pytest.approx(1.0)
    assert gc_content(at) == 0.0 and gc_content(gc) == 1.0
    assert kmer_spectrum([np.array([0, 4, 1, 2], np.uint8)], 2).tolist()[1 * 4 + 2] == 1.0  # k-mers with N skipped
    out = compare_to_real({"same": a, "at": at}, a, ks=(1, 2))
    assert out["same"]["js_k2"] < 1e-12 < out["at"]["js_k2"]


def test_windows_longer_than_any_chunk(tmp_path):
    """No length cap: a 2^18 + 5 context from the store, and a model pass over 2^17 + 7 bases."""
    rng = np.random.default_rng(0)
    with StoreWriter(tmp_path / "s", "fp", source={"kind": "test"}) as w:
        w.add("long", rng.integers(0, 4, 600_000).astype(np.uint8))
    store = prepare_genome({"store": str(tmp_path / "s")})
    train = genome_splits(store, 300_000, (0.5, 0.5, 0.0))["train"]
    x = ShardedLMBatches(store, train, seed=0)(0, (1 << 18) + 5, 1)
    assert x.shape == (1, (1 << 18) + 6)
    torch.manual_seed(0)
    model = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=10)).eval()
    L = (1 << 17) + 7
    stats = lm_bits(model, [x[:, : L + 1]])
    assert stats["n_tokens"] == L and 1.5 < stats["bits_per_base"] < 4.0
