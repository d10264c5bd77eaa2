"""bench/bench_audio_ablation.py --quick end to end on one CPU core: the paper grid's four variants, each its
own run folder with metrics and a listening page, one table, JSON; cut into units (--units) it resumes where
it stopped and ends with the same runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from seeding import rng_for

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_audio_ablation", ROOT / "bench" / "bench_audio_ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _noise_digits(d: Path, rng) -> Path:
    d.mkdir()
    for s, n in zip(("train", "val", "test"), (20, 10, 10)):
        np.save(d / f"{s}_audio.npy", (rng.standard_normal((n, 16000)) * 3000).astype(np.int16))
        np.save(d / f"{s}_labels.npy", np.arange(n) % 10)
    (d / "manifest.json").write_text(json.dumps({"synthetic": True, "params_hash": "test"}))
    return d


def test_paper_grid():
    bench = _bench()
    assert bench.variants("paper") == [("sashimi", "complex", "mulaw"), ("mamba", "complex", "mulaw"),
                                       ("sashimi", "real", "mulaw"), ("sashimi", "complex", "linear")]
    assert len(set(bench.variants("full"))) == 8
    over = bench.variant_overrides({"audio_model": {"d_model": 96, "d_state": 16, "n_layer": 4, "pool": [4, 4]}},
                                   "mamba", "real", "linear")
    assert "audio_model.n_layer=24" in over and "audio_model.complex=false" in over and "data.quantization=linear" in over


def test_quick_ablation_end_to_end_in_units(tmp_path, request, capsys):
    bench = _bench()
    data = _noise_digits(tmp_path / "data", rng_for(request))
    args = ["--quick", "--work", str(tmp_path / "work"), "--data-dir", str(data), "--out", str(tmp_path / "a.json")]
    assert bench.main([*args, "--units", "3"]) == 0  # train + evaluate the first variant, train the second
    assert "1 of 4 variants done, 5 unit(s) left" in capsys.readouterr().out and not (tmp_path / "a.json").exists()
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "a.json").read_text())
    names = [r["variant"] for r in res["rows"]]
    assert names == ["sashimi-complex-mulaw", "mamba-complex-mulaw", "sashimi-real-mulaw", "sashimi-complex-linear"]
    for r in res["rows"]:
        run = Path(r["run"])
        assert r["steps"] == 4 and (run / "listen.html").is_file() and 0 <= r["continuation_accuracy"] <= 1
        assert r["quantization"] == r["variant"].split("-")[2] and 0 < r["test_nll_bits_per_sample"] < 9
        assert all(np.isfinite(r[k]) for k in ("IS", "mIS", "AM", "FID"))
    assert all(n in out for n in names) and "compares only rows of the same quantization" in out
