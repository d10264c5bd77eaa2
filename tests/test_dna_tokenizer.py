"""Tokenizer, reverse complement and k-mers (mambaseq.data.dna)."""

import numpy as np
import pytest
import torch

from mambaseq.data.dna import (N_ID, PAD_ID, VOCAB, CharTokenizer, KmerTokenizer, decode, encode, rc_augment,
                               reverse_complement, soft_mask_runs)

COMP = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}


def naive_rc(s: str) -> str:
    return "".join(COMP[c] for c in reversed(s))


def random_dna(rng: np.random.Generator, n: int, alphabet: str = "ACGTN") -> str:
    return "".join(rng.choice(list(alphabet), n))


@pytest.mark.parametrize("text,expected", [
    ("ACGT", "ACGT"), ("acgt", "ACGT"), ("AcGtN", "ACGTN"), ("RYSWKMBDHVNryswkmbdhvn", "N" * 22),
    ("UUu", "TTT"), ("", ""),
], ids=["upper", "lower", "mixed", "iupac-to-N", "U-is-T", "empty"])
def test_encode_decode(text, expected):
    ids = encode(text)
    assert ids.dtype == np.uint8 and ids.shape == (len(text),)
    assert decode(ids) == expected


@pytest.mark.parametrize("text,pos,char", [("ACGTX", 4, "X"), ("-ACG", 0, "-"), ("AC GT", 2, " "),
                                           ("ACGé", 3, "?"), ("AC*", 2, "*")],
                         ids=["X", "gap", "space", "non-ascii", "star"])
def test_encode_rejects_non_iupac_with_position(text, pos, char):
    with pytest.raises(ValueError, match=rf"myfile.fa record 'r1'.*{pos} \(0-based\)"):
        encode(text, where="myfile.fa record 'r1'")


@pytest.mark.parametrize("n", [1, 7, 1000], ids=["L1", "L7", "L1000"])
def test_reverse_complement_matches_naive(n):
    rng = np.random.default_rng(n)
    s = random_dna(rng, n)
    ids = encode(s)
    assert decode(reverse_complement(ids)) == naive_rc(s)
    t = torch.from_numpy(ids).long()
    assert decode(reverse_complement(t)) == naive_rc(s)
    np.testing.assert_array_equal(reverse_complement(reverse_complement(ids)), ids)  # involution


def test_reverse_complement_batched_and_specials():
    x = torch.tensor([[0, 1, 2, 3, N_ID, PAD_ID], [PAD_ID, 3, 3, 0, 1, 2]])
    rc = reverse_complement(x)
    assert rc.tolist() == [[PAD_ID, N_ID, 0, 1, 2, 3], [1, 2, 3, 0, 0, PAD_ID]]


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64])
def test_reverse_complement_output_usable_downstream(request, dtype):
    """The case `rc_negative_strides.py` and its kind (issue 14, kind 8), property over 50 random inputs of
    random shape and layout (C order, Fortran order, strided and reversed views): the numpy result is a
    new C-contiguous array of the input dtype that torch.from_numpy accepts, and equals the naive reverse
    complement (with a torch tensor input giving the same ids)."""
    from seeding import rng_for

    rng = rng_for(request)
    for _ in range(50):
        shape = tuple(int(s) for s in rng.integers(1, 7, int(rng.integers(1, 4))))
        x = rng.integers(0, len(VOCAB), shape).astype(dtype)
        view = rng.choice(["c", "fortran", "strided", "reversed"])
        if view == "fortran":
            x = np.asfortranarray(x)
        elif view == "strided":
            x = np.repeat(x, 2, axis=-1)[..., ::2]
        elif view == "reversed":
            x = x[..., ::-1]
        rc = reverse_complement(x)
        assert rc.flags["C_CONTIGUOUS"] and min(rc.strides) > 0 and rc.dtype == x.dtype and rc.shape == x.shape
        assert not np.shares_memory(rc, x)
        t = torch.from_numpy(rc)
        comp = np.array([3, 2, 1, 0] + list(range(4, len(VOCAB))))
        np.testing.assert_array_equal(rc, comp[x][..., ::-1])
        np.testing.assert_array_equal(reverse_complement(torch.from_numpy(x.copy(order="C"))).numpy(), t)


@pytest.mark.parametrize("bad", [np.array([0, 256], np.int64), np.array([-1, 2]), np.array([0.0, 1.0]),
                                 np.array(3, np.uint8)], ids=["too_big", "negative", "float", "0d"])
def test_reverse_complement_rejects_non_token_arrays(bad):
    with pytest.raises(ValueError, match="token ids"):
        reverse_complement(bad)


def test_rc_augment_seeded_and_row_wise():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.stack([encode(random_dna(rng, 50, "ACGT")) for _ in range(64)])).long()
    a = rc_augment(x, 0.5, torch.Generator().manual_seed(3))
    b = rc_augment(x, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    flipped = [not torch.equal(a[i], x[i]) for i in range(64)]
    assert 10 < sum(flipped) < 54
    for i in range(64):
        assert torch.equal(a[i], reverse_complement(x[i]) if flipped[i] else x[i])
    assert torch.equal(rc_augment(x, 0.0), x)


def test_soft_mask_runs():
    runs = soft_mask_runs("ACgtNNaaAc")
    assert runs.tolist() == [[2, 4], [6, 8], [9, 10]]
    assert soft_mask_runs("ACGT").shape == (0, 2)


def test_char_tokenizer_specials():
    tok = CharTokenizer()
    assert tok.vocab_size == len(VOCAB) == 10
    ids = tok.encode("acgn", add_bos=True, add_eos=True)
    assert ids.tolist() == [tok.bos_id, 0, 1, 2, 4, tok.eos_id]
    assert tok.decode(ids) == "ACGN"


@pytest.mark.parametrize("k,stride", [(1, 1), (3, 3), (3, 1), (6, 2)], ids=["k1", "k3", "k3s1", "k6s2"])
def test_kmer_tokenizer(k, stride):
    rng = np.random.default_rng(k)
    s = random_dna(rng, 101, "ACGT") + "N" + random_dna(rng, 20, "ACGT")
    tok = KmerTokenizer(k, stride)
    out = tok(encode(s))
    kmers = [s[i : i + k] for i in range(0, len(s) - k + 1, stride)]
    assert len(out) == len(kmers)
    assert tok.decode(out) == [km if "N" not in km else "N" * k for km in kmers]
    assert out.max() <= tok.unk_id
