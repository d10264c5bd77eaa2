"""Region strings SEQ:START-END are 1-based and inclusive at both ends, as samtools faidx / UCSC (issue 14,
kind 4): both ends of a sequence, out-of-range positions, random regions against plain slicing."""

import pytest

from mambaseq.data import decode, format_region, parse_region
from mambaseq.data_prep.fasta import prepare_fasta
from mambaseq.pipelines.pretrain import prompts
from seeding import rng_for

SEQS = {"chr20": "ACGTTGCAAC", "HLA:A*01": "GGGA", "one": "T", "gap": "NNNNNNAC"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("regions")
    (d / "g.fa").write_text("".join(f">{k}\n{v}\n" for k, v in SEQS.items()))
    return prepare_fasta([d / "g.fa"], d / "store", progress=False)


def _text(store, region: str) -> str:
    iv = parse_region(region, store)
    return decode(store.window(iv.seq, iv.start, iv.end))


@pytest.mark.parametrize("region,expected", [
    ("chr20:1-4", "ACGT"),           # samtools faidx g.fa chr20:1-4
    ("chr20:1-1", "A"),              # first base alone
    ("chr20:10-10", "C"),            # last base alone
    ("chr20:7-10", "CAAC"),          # up to the last base
    ("chr20:1-10", "ACGTTGCAAC"),    # the whole sequence
    ("chr20:1,0-10", "C"),           # commas are ignored ("1,0" = 10)
    ("chr20:9", "AC"),               # START only: to the end
    ("chr20", "ACGTTGCAAC"),         # name only: everything
    ("HLA:A*01:2-3", "GG"),          # a name holding ':'
    ("HLA:A*01", "GGGA"),
    ("one:1-1", "T"),
], ids=["first4", "first", "last", "to_end", "whole", "commas", "start_only", "name_only", "colon_name",
        "colon_name_whole", "length1"])
def test_one_based_inclusive_at_both_ends(store, region, expected):
    assert _text(store, region) == expected


@pytest.mark.parametrize("region,match", [
    ("chr20:-1-4", "must be"),
    ("chr20:5-4", "after end"),
    ("chr20:1-11", "beyond the end of chr20 \\(10 bases"),
    ("chr20:11", "after end"),
    ("chrX:1-4", "no sequence 'chrX'"),
    ("chr20:a-b", "must be 'SEQ:START-END'"),
    ("chr20:1-2-3", "must be"),
    ("one:2-2", "beyond the end"),
], ids=["negative", "reversed", "past_end", "start_past_end", "unknown_seq", "letters", "three_numbers",
        "past_end_len1"])
def test_out_of_range_regions_rejected(store, region, match):
    with pytest.raises(ValueError, match=match) as ei:
        parse_region(region, store, "generate.region")
    assert "generate.region" in str(ei.value)


def test_random_regions_match_slicing_and_round_trip(store, request):
    """Property: 300 random 1-based inclusive (start, end) give seq[start-1:end]; format_region inverts."""
    rng = rng_for(request)
    names = list(SEQS)
    for _ in range(300):
        name = names[int(rng.integers(len(names)))]
        n = len(SEQS[name])
        start = int(rng.integers(1, n + 1))
        end = int(rng.integers(start, n + 1))
        region = f"{name}:{start}-{end}"
        iv = parse_region(region, store)
        assert (iv.start, iv.end) == (start - 1, end)
        assert _text(store, region) == SEQS[name][start - 1 : end]
        assert format_region(iv.seq, iv.start, iv.end) == region


def test_start_zero_is_read_as_one_with_a_warning(store):
    """1-based notation has no position 0; samtools reads START 0 as 1, and so does parse_region, warning."""
    with pytest.warns(UserWarning, match="generate.region 'chr20:0-4': positions are 1-based .* read as 1"):
        iv = parse_region("chr20:0-4", store, "generate.region")
    assert (iv.start, iv.end) == (0, 4)


def test_generate_region_prompt(store):
    """The case `region_off_by_one.py`: the prompt of chr20:1-4 is ACGT; chr20:0-4 gives it too, warning."""
    cfg = {"seed": 0, "generate": {"n_samples": 2, "prompt_len": 4, "n_new": 2, "region": "chr20:1-4"}}
    ids, real, where = prompts(cfg, store)
    assert [decode(p) for p in ids] == ["ACGT", "ACGT"] and real is None and where == ["chr20:1-4"] * 2
    cfg["generate"]["region"] = "chr20:0-4"
    with pytest.warns(UserWarning, match="start 0 is read as 1"):
        ids, _, _ = prompts(cfg, store)
    assert [decode(p) for p in ids] == ["ACGT", "ACGT"]


def test_a_prompt_inside_an_assembly_gap_warns(store):
    """A generate.region that is mostly N (an assembly gap, as the start of chr20) warns; bases do not."""
    import warnings

    cfg = {"seed": 0, "generate": {"n_samples": 1, "prompt_len": 4, "n_new": 2, "region": "gap:1-6"}}
    with pytest.warns(UserWarning, match="100% of the prompt is N"):
        prompts(cfg, store)
    cfg["generate"]["region"] = "chr20:1-4"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prompts(cfg, store)
