"""FASTA -> token store: content, idempotence, atomicity, bad input (mambaseq.data_prep.fasta)."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from mambaseq.data import TokenStore, decode
from mambaseq.data_prep.fasta import prepare_fasta


def write_fasta(path: Path, records: dict[str, str], gz: bool = False, width: int = 60) -> Path:
    text = "".join(f">{k} some description\n" + "\n".join(v[i : i + width] for i in range(0, len(v), width)) + "\n"
                   for k, v in records.items())
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def random_records(seed: int, n: int = 3, lo: int = 50, hi: int = 500) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    alphabet = list("ACGTacgtNRY")
    return {f"chr{i}": "".join(rng.choice(alphabet, int(rng.integers(lo, hi)))) for i in range(n)}


def expected_tokens(s: str) -> str:
    return "".join(c if c in "ACGTN" else "N" for c in s.upper())


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_prepare_roundtrip(tmp_path, gz):
    recs = random_records(1 + gz)
    fa = write_fasta(tmp_path / ("g.fa.gz" if gz else "g.fa"), recs, gz=gz)
    store = prepare_fasta([fa], tmp_path / "store", keep_mask=True, progress=False)
    assert store.names == list(recs)
    for name, seq in recs.items():
        tokens = store.get(name)
        assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint8
        assert decode(tokens) == expected_tokens(seq)  # case and ambiguity codes never reach the tokens
        lower = [i for i, c in enumerate(seq) if c.islower()]
        masked = [i for a, b in store.mask_runs(name).tolist() for i in range(a, b)]
        assert masked == lower
    store.verify()
    assert store.index["source"]["kind"] == "fasta" and not store.synthetic


def test_prepare_is_idempotent(tmp_path):
    fa = write_fasta(tmp_path / "g.fa", random_records(3))
    out = tmp_path / "store"
    prepare_fasta([fa], out, progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    prepare_fasta([fa], out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing rewritten
    write_fasta(fa, random_records(4))  # changed input -> rebuilt
    store = prepare_fasta([fa], out, progress=False)
    assert decode(store.get("chr0")) == expected_tokens(random_records(4)["chr0"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left


def test_labelled_inputs_and_splits(tmp_path):
    a = write_fasta(tmp_path / "a.fa", {"chr1": "ACGT" * 10, "chr22": "GGCC" * 10})
    b = write_fasta(tmp_path / "b.fa", {"chr1": "TTTT" * 10, "chr22": "AAAA" * 10})
    store = prepare_fasta({"human": a, "chimp": [b]}, tmp_path / "s", splits={"test": ["chr22"]}, progress=False)
    assert store.names == ["human/chr1", "human/chr22", "chimp/chr1", "chimp/chr22"]
    assert store.label_names == ["human", "chimp"]
    assert store.label_ids().tolist() == [0, 0, 1, 1]
    assert [r["split"] for r in store.records] == ["train", "test", "train", "test"]


BAD = {
    "not-fasta": ("hello world\nthis is not a FASTA file\n", r"not a FASTA file"),
    "binary": ("\x89PNG\r\n\x1a\n\x00\x00garbage", r"not a FASTA file"),
    "empty-record": (">r1\nACGT\n>r2\n>r3\nAC\n", r"record 'r2' is empty"),
    "bad-char": (">r1\nACGT\n>r2\nACGTAC\nGTXAA\n", r"record 'r2'.*'X' at position 8"),
    "duplicate": (">r1\nACGT\n>r1\nACGT\n", r"duplicate record id 'r1'"),
    "no-records": ("", r"not a FASTA file"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_errors_and_writes_nothing(tmp_path, case):
    text, msg = BAD[case]
    fa = tmp_path / "bad.fa"
    fa.write_bytes(text.encode("latin-1") if case != "bad-char" else text.encode())
    with pytest.raises(ValueError, match=msg) as e:
        prepare_fasta([fa], tmp_path / "store", progress=False)
    assert str(fa) in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.fa"]  # no store, no temp dir


def test_failed_reprep_keeps_previous_store(tmp_path):
    good = write_fasta(tmp_path / "g.fa", random_records(5))
    out = tmp_path / "store"
    prepare_fasta([good], out, progress=False)
    good.write_text(">r1\nACGT\n>r2\nACQT\n")
    with pytest.raises(ValueError, match="position 2"):
        prepare_fasta([good], out, progress=False)
    TokenStore(out).verify()  # the earlier complete store is still there and intact
    assert TokenStore(out).names == list(random_records(5))


def test_missing_file_and_not_a_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.fa"):
        prepare_fasta([tmp_path / "nope.fa"], tmp_path / "s", progress=False)
    with pytest.raises(FileNotFoundError, match="not a token store"):
        TokenStore(tmp_path)
