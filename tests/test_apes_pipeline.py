"""Great-apes pipeline end to end on tiny simulated data with the debug model (Hydra configs)."""

import json

import pytest

from mambaseq.pipelines import apes


def tiny_overrides(tmp_path, *extra):
    return [
        "model=debug", "data.source=simulated", f"data.out_root={tmp_path}/data", f"out_dir={tmp_path}/runs",
        "data.sim_length=60000", "data.region_size=12000", "train.max_steps=6", "train.batch_size=4",
        "train.warmup_steps=2", "train.ckpt_every=3", "train.progress=false", "eval.test_windows_per_class=6",
        "eval.val_windows_per_class=4", "eval.baseline_train_tokens=20000", *extra,
    ]


def test_run_writes_reports_for_several_lengths(tmp_path, capsys):
    cfg = apes.load_config(tiny_overrides(tmp_path, "data.seq_lens=[128,256]"))
    results = apes.run_all(cfg)
    assert [r["seq_len"] for r in results] == [128, 256]
    out = capsys.readouterr().out
    assert "SIMULATED" in out and "TEST accuracy" in out and "chance 0.200" in out
    for L in (128, 256):
        d = tmp_path / "runs" / f"simulated_debug_L{L}"
        m = json.loads((d / "metrics.json").read_text())
        assert m["synthetic"] is True and "SIMULATED" in m["data"]
        assert m["n_windows"] == 5 * 6 and m["chance_uniform"] == pytest.approx(0.2)
        assert 0 <= m["accuracy"] <= 1 and len(m["confusion_matrix"]) == 5
        assert 0 <= m["kmer_baseline_accuracy"] <= 1
        assert "orangutan" in (d / "classification_report.txt").read_text()
        assert (d / "confusion_matrix.png").stat().st_size > 1000
        assert (d / "checkpoints").is_dir() and (d / "metrics.csv").is_file()
    assert (tmp_path / "runs" / "accuracy_vs_length.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "runs" / "summary.json").read_text())
    assert [r["seq_len"] for r in summary["results"]] == [128, 256]
    # the top-level summary is the latest run's and says so; it points at each run's own folder
    assert "latest" in summary["note"]
    assert [r["run_dir"] for r in summary["results"]] == [str(tmp_path / "runs" / f"simulated_debug_L{L}")
                                                          for L in (128, 256)]
    # on CPU: no device memory peak (was a fake 0.0); the process's peak RSS, named as such
    assert all(r["peak_memory_gib"] is None and r["peak_rss_gib"] > 0 for r in summary["results"])


def test_resume_continues_the_same_run(tmp_path):
    cfg = apes.load_config(tiny_overrides(tmp_path, "data.seq_len=128"))
    d = apes.train(cfg)
    first = (d / "metrics.csv").read_text()
    cfg_more = apes.load_config(tiny_overrides(tmp_path, "data.seq_len=128", "train.max_steps=8"))
    apes.train(cfg_more, resume=True)
    lines = (d / "metrics.csv").read_text().splitlines()
    assert lines[: len(first.splitlines())] == first.splitlines()  # earlier rows kept, new steps appended
    assert any(l.startswith("8,") for l in lines)
    # resuming the finished run trains nothing and keeps its train_summary.json (was rewritten with 0 tok/s)
    summary = json.loads((d / "train_summary.json").read_text())
    assert summary["step"] == 8 and summary["tokens_per_s"] > 0
    apes.train(cfg_more, resume=True)
    assert json.loads((d / "train_summary.json").read_text()) == summary


def test_cli_and_config_overrides(tmp_path, capsys):
    assert apes.main(["show-config", "model=small", "data.seq_len=4096"]) == 0
    out = capsys.readouterr().out
    assert "size: small" in out and "seq_len: 4096" in out
    cfg = apes.load_config(["experiment=apes_gpu"])
    assert cfg["data"]["seq_lens"] == [4096, 65536] and cfg["train"]["seq_len_warmup"] is True
    assert cfg["data"]["tokens_per_step"] == 262144 and cfg["model"]["size"] == "small"
    with pytest.raises(Exception, match="model"):
        apes.load_config(["model=nonexistent"])


def test_evaluate_without_training_says_so(tmp_path):
    cfg = apes.load_config(tiny_overrides(tmp_path, "data.seq_len=128"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        apes.evaluate(cfg)


def test_prepared_store_needs_no_biopython(tmp_path):
    """A GPU machine may lack Biopython: training/evaluating from a prepared store must not import it."""
    import subprocess
    import sys

    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'Bio' or name.startswith('Bio.'): raise ImportError('Biopython blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from mambaseq.pipelines import apes\n"
        "from mambaseq.data import describe\n"
        "from mambaseq.data_prep.apes import prepare_apes\n"
        f"store = prepare_apes('simulated', r'{tmp_path}', sim_length=30000, region_size=6000, progress=False)\n"
        "print(describe(store))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "SIMULATED" in out.stdout


def test_split_bed_overrides_store_splits(tmp_path):
    from mambaseq.data import Interval, read_bed, write_bed

    cfg = apes.load_config(tiny_overrides(tmp_path, "data.seq_len=128", "train.max_steps=2"))
    store = apes.prepare(cfg)
    names = [r["name"] for r in store.records if r["region"] == 0]
    ivs = [Interval(n, 0, 2000, "train") for n in names] + [Interval(n, 2000, 2000 + 128 * 3, "val") for n in names]
    ivs += [Interval(n, 4000, 4000 + 128 * 2, "test") for n in names]
    write_bed(ivs, tmp_path / "splits.bed")
    cfg["data"]["split_bed"] = str(tmp_path / "splits.bed")
    d = apes.train(cfg, store=store)
    assert read_bed(d / "splits.bed") == ivs  # the run records the splits it used
    m = apes.evaluate(cfg, store=store)
    assert m["n_windows"] == 2 * len(names)  # exactly the tiled windows of the BED's test intervals
    write_bed([Interval(names[0], 0, 500, "holdout")], tmp_path / "bad.bed")
    cfg["data"]["split_bed"] = str(tmp_path / "bad.bed")
    with pytest.raises(ValueError, match="must be train/val/test"):
        apes.train(cfg, store=store)


def test_model_settings_are_checked_before_any_data(tmp_path):
    from mambaseq.settings import ConfigError

    with pytest.raises(ConfigError, match="model: .*kmer_size"):
        apes.load_config(tiny_overrides(tmp_path, "model.rc_equivariant=true", "model.kmer_size=6"))
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


def test_both_strands_averages_logits_and_is_strand_symmetric():
    """eval.rc_average: BothStrands gives (f(x) + f(RC x)) / 2, the same for a window and its reverse complement,
    for a Wide & Deep classifier with 6-mer tokens (which no RC-equivariant model covers)."""
    import zlib

    import torch

    from mambaseq import MambaConfig, MambaForSequenceClassification
    from mambaseq.data import reverse_complement

    torch.manual_seed(zlib.crc32(b"both_strands"))
    cfg = MambaConfig.from_name("debug", vocab_size=5, num_labels=3, kmer_size=3, wide_kmer_size=2)
    model = MambaForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # heads start at zero: give them something to average
        x = torch.randint(0, 4, (4, 40))
        both = apes.BothStrands(model)
        want = 0.5 * (model(x) + model(reverse_complement(x)))
        torch.testing.assert_close(both(x), want, rtol=0, atol=0)
        torch.testing.assert_close(both(reverse_complement(x)), both(x), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(model(x), model(reverse_complement(x)))


def test_rc_average_setting_runs_and_is_checked(tmp_path, capsys):
    cfg = apes.load_config(tiny_overrides(tmp_path, "data.seq_len=128", "eval.rc_average=true"))
    (r,) = apes.run_all(cfg)
    assert 0 <= r["accuracy"] <= 1
    with pytest.raises(ValueError, match="eval.rc_average"):
        apes.run_all(apes.load_config(tiny_overrides(tmp_path, "eval.rc_average=maybe")))


def test_maf_run_is_labelled_a_negative_control(tmp_path, capsys):
    """data.source=maf (the negative control) says so on the TEST line, in a NEGATIVE CONTROL line and in
    metrics.json; a simulated run says SIMULATED instead."""
    from test_apes_data import make_maf

    maf = tmp_path / "aln.maf"
    make_maf(maf, n_blocks=40, block_len=300, seed=3, identical=False)
    over = [o for o in tiny_overrides(tmp_path) if not o.startswith(("data.source", "data.sim_length",
                                                                   "data.region_size"))]
    cfg = apes.load_config([*over, "data.source=maf", f"data.maf={maf}", "data.region_size=1200", "data.seq_len=128",
                            "data.fractions=[0.6,0.2,0.2]"])
    (m,) = apes.run_all(cfg)
    out = capsys.readouterr().out
    assert m["negative_control"] is True and "NEGATIVE CONTROL" in out and "SIMULATED" not in out
    assert json.loads((tmp_path / "runs" / "maf_debug_L128" / "metrics.json").read_text())["negative_control"]
