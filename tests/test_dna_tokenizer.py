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
