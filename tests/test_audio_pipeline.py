"""End to end on a tiny synthetic digit set: prepare -> classifier -> train -> generate -> evaluate."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from mambaseq.pipelines import audio
from seeding import rng_for
from seeding import current_seed


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                    reason="needs espeak-ng and sox (apt-get install -y espeak-ng sox)")
@pytest.mark.parametrize("backbone", ["sashimi", "mamba"])
def test_tiny_run(tmp_path, backbone):
    cfg = audio.load_config([
        f"audio_model={backbone}", "audio_model.d_model=8", "audio_model.d_state=4", "audio_model.complex=true",
        f"data.dir={tmp_path / 'data'}", "data.max_voices=6", "data.accents_per_voice=1",
        f"out_dir={tmp_path / 'runs'}", "train.max_steps=3", "data.seq_len=256", "train.batch_size=2",
        "train.progress=false", "train.max_time_s=0", "classifier.epochs=1", "eval.val_clips=1",
        "eval.nll_clips=1", "generate.n_samples=3", "generate.batch_size=2", "generate.seconds=0.01",
        "generate.prefix_seconds=0.005", "generate.mel_examples=2",
    ] + (["audio_model.n_layer=1"] if backbone == "sashimi" else ["audio_model.n_layer=2"]))
    res = audio.run_all(cfg)
    out = tmp_path / "runs" / f"synthetic_{backbone}"
    assert res["synthetic_data"] is True and "SYNTHETIC" in res["data"]
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(res))
    assert 0 < res["test_nll_bits_per_sample"] < 9  # 8 bits = uniform over 256 classes, an untrained model
    for name in ("generated", "real_val_same_n", "real_val_all"):
        assert 1.0 <= res[name]["IS"] <= 10.0 + 1e-9 and res[name]["FID"] >= 0
    wavs = sorted((out / "samples").glob("gen_*.wav"))
    assert len(wavs) == 3
    info = sf.info(wavs[0])
    assert info.samplerate == 16000 and info.channels == 1 and info.frames == 160  # prefix 80 + 80 new
    meta = json.loads((out / "samples" / "samples.json").read_text())
    assert meta["synthetic_data"] is True and all(np.isfinite(r["bits_per_sample"]) for r in meta["samples"])
    assert (out / "samples" / "mel_generated_vs_real.png").stat().st_size > 1000


def test_gpu_recipe_fits_one_lent_command():
    """experiment=sc09_gpu (data/audio_gpu/gpu_cmd.sh runs it in one <= 10 min command): training is bounded
    by wall time, all samples are stepped in one batch, and the config builds the paper-style model."""
    from mambaseq import runs

    cfg = audio.load_config(["experiment=sc09_gpu"])
    tc = runs.train_config(cfg, cfg["data"]["seq_len"])
    assert 0 < tc.max_time_s <= 300 and tc.seq_len == 16000
    assert cfg["generate"]["batch_size"] >= cfg["generate"]["n_samples"]
    model = audio.build_model(cfg)
    assert cfg["audio_model"]["complex"] is True and type(model).__name__ == "SaShiMiLM"
    assert sum(p.numel() for p in model.parameters()) > 1e6


def test_time_stop_before_first_log(tmp_path, request):
    """A time budget that ends training before the first train log still writes a summary and a checkpoint
    (the GPU recipe is time-bounded; a slow start must not crash the run after training)."""
    from mambaseq.audio import SPLITS, Digits
    from mambaseq.training import latest_checkpoint

    rng = rng_for(request)
    d = tmp_path / "data"
    d.mkdir()
    for s, n in zip(SPLITS, (6, 2, 2)):
        np.save(d / f"{s}_audio.npy", (rng.standard_normal((n, 16000)) * 3000).astype(np.int16))
        np.save(d / f"{s}_labels.npy", rng.integers(0, 10, n))
    (d / "manifest.json").write_text(json.dumps({"synthetic": True, "params_hash": "test"}))
    cfg = audio.load_config([
        "audio_model=mamba", "audio_model.d_model=8", "audio_model.n_layer=1", "audio_model.d_state=4",
        f"data.dir={d}", f"out_dir={tmp_path / 'runs'}", "train.max_steps=50", "train.log_every=10",
        "train.max_time_s=1e-9", "data.seq_len=64", "train.batch_size=2", "train.progress=false",
        "eval.val_clips=1", "eval.batch_size=1"])
    out = audio.train(cfg, Digits(d, "mulaw"))
    s = json.loads((out / "train_summary.json").read_text())
    assert s["steps"] == 1 and s["stopped_early"] is True and s["train_bits_per_sample"] is None
    assert 0 < s["val_bits_per_sample"] < 9 and s["config"]["train"]["max_time_s"] == 1e-9
    assert latest_checkpoint(out) is not None


def test_context_length_lives_under_data():
    """data.seq_len as in the other pipelines; the old train.seq_len is read as data.seq_len, with a warning."""
    assert audio.load_config(["data.seq_len=512"])["data"]["seq_len"] == 512
    with pytest.warns(FutureWarning, match="train.seq_len is now data.seq_len"):
        cfg = audio.load_config(["train.seq_len=256"])
    assert cfg["data"]["seq_len"] == 256 and "seq_len" not in cfg["train"]
