"""Great-apes data sets: MAF (case/gap invisibility, region splits), simulator, FASTA, source choice."""

import numpy as np
import pytest
import torch

from mambaseq.data import RandomWindows, decode, split_intervals
from mambaseq.data_prep import apes as apes_data
from mambaseq.data_prep.maf import prepare_maf, species_of
from mambaseq.data_prep.simulate import SimParams, export_fasta, pairwise_divergence, simulate_apes
from mambaseq.settings import ConfigError
from seeding import rng_for

CODES = {"human": "Hsap.22", "chimpanzee": "Ptro.22", "gorilla": "Ggor.22", "orangutan": "Ppyg.Un"}


def make_maf(path, n_blocks: int, block_len: int, seed: int, identical: bool) -> dict[str, str]:
    """A MAF whose rows differ between species in case and gap placement; with ``identical`` the
    de-gapped, upper-cased sequences are the same for every species. Returns {species: expected DNA}."""
    rng = np.random.default_rng(seed)
    lines, expected = ["##maf version=1", ""], {sp: "" for sp in CODES}
    for b in range(n_blocks):
        base = "".join(rng.choice(list("ACGT"), block_len))
        n_gaps = 5
        lines.append("a score=0")
        for sp, code in CODES.items():
            seq = base if identical else "".join(c if rng.random() > 0.05 else rng.choice(list("ACGT")) for c in base)
            chars = [c.lower() if rng.random() < 0.3 else c for c in seq]  # random soft-masking per species
            for pos in sorted(rng.choice(len(chars) + 1, n_gaps, replace=True), reverse=True):
                chars.insert(int(pos), "-")  # species-specific gap placement, same row length
            lines.append(f"s {code} {b * block_len} {block_len} + 100000 {''.join(chars)}")
            expected[sp] += seq
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return expected


def test_case_and_gaps_are_invisible_to_the_classifier(tmp_path):
    maf = tmp_path / "aln.maf"
    expected = make_maf(maf, n_blocks=6, block_len=400, seed=0, identical=True)
    store = prepare_maf(maf, tmp_path / "s", region_size=800, keep_mask=True, progress=False)
    assert store.label_names == ["human", "chimpanzee", "gorilla", "orangutan"]
    tokens = {sp: np.concatenate([store.get(i) for i, r in enumerate(store.records) if r["label"] == sp])
              for sp in store.label_names}
    for sp in store.label_names:
        assert decode(tokens[sp]) == expected[sp].upper()
        assert tokens[sp].max() <= 4  # only A C G T N ids: no case, no gap symbol
        np.testing.assert_array_equal(tokens[sp], tokens["human"])  # species differ only in case/gaps
    # ... so every window the model can be given is identical across species: nothing to learn from
    ivs = split_intervals(store, by="store")["train"]
    by_species = {sp: RandomWindows(store, [iv for iv in ivs if iv.seq.startswith(sp)], 200, seed=1)
                  for sp in store.label_names}
    batches = {sp: ds.batch(3, 4)[0] for sp, ds in by_species.items()}
    assert all(torch.equal(b, batches["human"]) for b in batches.values())
    # the soft-masking is kept apart, and it does differ between species
    assert not np.array_equal(store.mask_runs("human:0000"), store.mask_runs("chimpanzee:0000"))


def test_maf_regions_split_all_species_together(tmp_path):
    maf = tmp_path / "aln.maf"
    expected = make_maf(maf, n_blocks=12, block_len=300, seed=1, identical=False)
    store = prepare_maf(maf, tmp_path / "s", region_size=600, progress=False)
    regions = {}
    for r in store.records:
        regions.setdefault(r["region"], set()).add(r["split"])
    assert len(regions) == 6 and all(len(s) == 1 for s in regions.values())  # a region is in one split
    splits = [next(iter(s)) for s in regions.values()]
    assert {"train", "val", "test"} <= set(splits)
    for sp in store.label_names:
        got = "".join(decode(store.get(f"{sp}:{k:04d}")) for k in sorted(regions))
        assert got == expected[sp].upper()
    # idempotent: a second call leaves the store untouched
    before = (store.path / "index.json").stat().st_mtime_ns
    prepare_maf(maf, tmp_path / "s", region_size=600, progress=False)
    assert (store.path / "index.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("text,msg", [("hello\nworld\n", "no alignment blocks"),
                                      ("a\ns Hsap.1 0 4 + 10 ACXT\n\n", r"block 1 row Hsap.1.*'X' at position 2")],
                         ids=["not-maf", "bad-char"])
def test_maf_bad_input(tmp_path, text, msg):
    (tmp_path / "bad.maf").write_text(text)
    with pytest.raises(ValueError, match=msg) as e:
        prepare_maf(tmp_path / "bad.maf", tmp_path / "s", progress=False)
    assert "bad.maf" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.maf"]


@pytest.mark.parametrize("src,name", [("Hsap.22", "human"), ("hg38.chr22", "human"), ("panTro6.chr1", "chimpanzee"),
                                      ("Ppyg.Un", "orangutan"), ("ponAbe3.chr2", "orangutan"), ("mm10.chr1", "mm10")])
def test_species_of(src, name):
    assert species_of(src) == name


@pytest.fixture(scope="module")
def genomes():
    return simulate_apes(SimParams(length=300_000, seed=5))


@pytest.mark.parametrize("a,b,published", [("chimpanzee", "bonobo", 0.004), ("human", "chimpanzee", 0.012),
                                           ("human", "gorilla", 0.016), ("human", "orangutan", 0.031)],
                         ids=["chimp-bonobo", "human-chimp", "human-gorilla", "human-orangutan"])
def test_simulator_divergences(genomes, a, b, published):
    assert pairwise_divergence(genomes[a], genomes[b]) == pytest.approx(published, rel=0.12)


def test_simulator_realistic_and_seeded(genomes):
    seq = genomes["human"][0]
    gc = np.isin(seq, [1, 2]).mean()
    assert 0.37 < gc < 0.47
    assert all(g[0].size != genomes["human"][0].size for sp, g in genomes.items() if sp != "human")  # indels
    again = simulate_apes(SimParams(length=300_000, seed=5))
    assert all(np.array_equal(again[sp][0], genomes[sp][0]) for sp in genomes)
    other = simulate_apes(SimParams(length=300_000, seed=6))
    assert not np.array_equal(other["human"][0][:1000], genomes["human"][0][:1000])


def test_simulated_store_is_labelled_synthetic(tmp_path):
    store = apes_data.prepare_apes("simulated", tmp_path, sim_length=100_000, region_size=20_000, progress=False)
    assert store.synthetic and store.source["kind"] == "simulated"
    assert "SIMULATED" in apes_data.describe(store)
    assert store.label_names == ["human", "chimpanzee", "bonobo", "gorilla", "orangutan"]
    assert {r["split"] for r in store.records} == {"train", "val", "test"}


def test_fasta_source_holds_out_chromosomes(tmp_path, genomes):
    small = {sp: (g[0][:120_000], g[1][:120_000]) for sp, g in genomes.items()}
    paths = export_fasta(small, tmp_path / "fa", chunk=40_000)
    store = apes_data.prepare_apes("fasta", tmp_path, fasta={sp: str(p) for sp, p in paths.items()},
                                   val_chroms=["simchr2"], test_chroms=["simchr3"], progress=False)
    assert store.source["kind"] == "fasta" and store.label_names[0] == "human"
    split_of = {r["name"]: r["split"] for r in store.records}
    assert split_of["gorilla/simchr3"] == "test" and split_of["human/simchr2"] == "val"
    assert split_of["bonobo/simchr1"] == "train"
    with pytest.raises(ValueError, match="test_chroms"):
        apes_data.prepare_apes("fasta", tmp_path, fasta={"human": str(paths["human"])}, progress=False)


def test_fasta_held_out_ids_may_be_ints_and_unknown_ids_are_named(request, tmp_path):
    """Hydra reads ``data.test_chroms=[3]`` as an int: it names record "3". An id no record has fails before
    any store is written, naming it and the ids there are (issue 1 of the new-user trial)."""
    rng = rng_for(request)
    paths = {}
    for sp in ("human", "chimpanzee"):
        paths[sp] = tmp_path / f"{sp}.fa"
        paths[sp].write_text("".join(f">{c}\n{''.join(rng.choice(list('ACGT'), 3000))}\n" for c in ("1", "2", "3")))
    fasta = {sp: str(p) for sp, p in paths.items()}
    store = apes_data.prepare_apes("fasta", tmp_path, fasta=fasta, val_chroms=[2], test_chroms=[3], progress=False)
    assert {r["name"]: r["split"] for r in store.records}["chimpanzee/3"] == "test"
    with pytest.raises(ConfigError, match=r"^data\.test_chroms=\['3', 'chr9'\]: .*\['chr9'\].*record ids there: 1, 2, 3$"):
        apes_data.prepare_apes("fasta", tmp_path / "b", fasta=fasta, test_chroms=[3, "chr9"], progress=False)
    assert not (tmp_path / "b" / "apes_fasta").exists()


def test_auto_source(monkeypatch, tmp_path):
    from mambaseq.data_prep import sources

    apes = apes_data.SOURCES
    assert sources.resolve_source("auto", apes) == "simulated"
    assert sources.resolve_source("auto", apes, fasta={"human": "x.fa"}) == "fasta"
    assert sources.resolve_source("auto", apes, fasta={"human": None}) == "simulated"
    monkeypatch.setattr(sources, "DEBIAN_MAF", tmp_path / "x.maf")
    (tmp_path / "x.maf").write_text("")
    assert sources.resolve_source("auto", apes) == "simulated"  # the chr22 alignment is a negative control only
    assert sources.resolve_source("auto", apes, maf=tmp_path / "x.maf") == "maf"
    with pytest.raises(ValueError, match="must be one of"):
        sources.resolve_source("genbank", apes)
    # the pretraining genome: human chr20 where Debian's vt-examples is installed, else the simulator
    monkeypatch.setattr(sources, "VT_CHR20", tmp_path / "20.fa.gz")
    assert sources.resolve_source("auto", ("auto", "fasta", "chr20", "simulated")) == "simulated"
    assert sources.resolve_source("auto", apes) == "simulated"
    (tmp_path / "20.fa.gz").write_text("")
    assert sources.resolve_source("auto", ("auto", "fasta", "chr20", "simulated")) == "chr20"
    assert sources.resolve_source("auto", apes) == "simulated"  # apes never picks chr20
    assert sources.resolve_source("auto", ("auto", "fasta", "chr20"), fasta="g.fa") == "fasta"
