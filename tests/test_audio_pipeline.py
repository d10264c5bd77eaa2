"""End to end on a tiny synthetic digit set: prepare -> classifier -> train -> generate -> evaluate, the
continuations and listening page, and the GPU recipes' step budgets."""

import json
import math
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import soundfile as sf

from mambaseq.pipelines import audio
from seeding import rng_for
from tolerances import CLOSE


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                    reason="needs espeak-ng and sox (apt-get install -y espeak-ng sox)")
@pytest.mark.parametrize("backbone", ["sashimi", "mamba"])
def test_tiny_run(tmp_path, backbone):
    cfg = audio.load_config([
        f"audio_model={backbone}", "audio_model.d_model=8", "audio_model.d_state=4", "audio_model.complex=true",
        f"data.dir={tmp_path / 'data'}", "data.max_voices=6", "data.accents_per_voice=1",
        f"out_dir={tmp_path / 'runs'}", "train.max_steps=3", "data.seq_len=256", "train.batch_size=2",
        "train.progress=false", "classifier.epochs=1", "eval.val_clips=1",
        "eval.nll_clips=1", "generate.n_samples=3", "generate.batch_size=2", "generate.seconds=0.01",
        "generate.n_continuations=3", "generate.continuation_prefix_seconds=0.005", "generate.mel_examples=2",
    ] + (["audio_model.n_layer=1"] if backbone == "sashimi" else ["audio_model.n_layer=2"]))
    res = audio.run_all(cfg)
    out = tmp_path / "runs" / f"synthetic_{backbone}"
    assert res["synthetic_data"] is True and "SYNTHETIC" in res["data"]
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(res))
    assert 0 < res["test_nll_bits_per_sample"] < 9  # 8 bits = uniform over 256 classes, an untrained model
    for name in ("generated", "real_val_same_n", "real_val_all"):
        assert 1.0 <= res[name]["IS"] <= 10.0 + 1e-9 and res[name]["FID"] >= 0
    for pattern in ("gen_*.wav", "cont_*.wav"):
        wavs = sorted((out / "samples").glob(pattern))
        assert len(wavs) == 3
        info = sf.info(wavs[0])
        assert info.samplerate == 16000 and info.channels == 1 and info.frames == 160  # cont: prefix 80 + 80 new
    meta = json.loads((out / "samples" / "samples.json").read_text())
    assert meta["synthetic_data"] is True and all(np.isfinite(r["bits_per_sample"]) for r in meta["samples"])
    assert (out / "samples" / "mel_generated_vs_real.png").stat().st_size > 1000
    assert 0 <= res["continuation_accuracy"] <= 1 and (out / "listen.html").is_file()


class _Links(HTMLParser):
    """Every src/href of a page, and its <audio> elements."""

    def __init__(self):
        super().__init__()
        self.links, self.audio = [], 0

    def handle_starttag(self, tag, attrs):
        self.audio += tag == "audio"
        self.links += [v for k, v in attrs if k in ("src", "href")]


def _noise_digits(d, rng, counts=(20, 10, 10)):
    """A prepared digit set of noise clips (no espeak-ng needed): labels cycle 0..9 within each split."""
    from mambaseq.audio import SPLITS

    d.mkdir()
    for s, n in zip(SPLITS, counts):
        np.save(d / f"{s}_audio.npy", (rng.standard_normal((n, 16000)) * 3000).astype(np.int16))
        np.save(d / f"{s}_labels.npy", np.arange(n) % 10)
    (d / "manifest.json").write_text(json.dumps({"synthetic": True, "params_hash": "test"}))
    return d


def test_continuations_metrics_and_listening_page(tmp_path, request):
    """generate writes unconditional samples and continuations of real test clips (balanced over digits, the
    real opening kept sample for sample); evaluate scores the continued clips against their true digits with
    a Wilson interval, next to the real clips (ceiling) and the opening alone, and writes listen.html whose
    every link exists and which holds one player per clip shown."""
    from mambaseq.audio import Digits, load_audio, mu_law_decode

    d = _noise_digits(tmp_path / "data", rng_for(request))
    cfg = audio.load_config([
        "audio_model=mamba", "audio_model.d_model=8", "audio_model.n_layer=1", "audio_model.d_state=4",
        f"data.dir={d}", f"out_dir={tmp_path / 'runs'}", "run_name=tiny", "train.max_steps=2", "data.seq_len=64",
        "train.batch_size=2", "train.progress=false", "eval.val_clips=1", "eval.nll_clips=2", "eval.batch_size=2",
        "classifier.epochs=1", "generate.n_samples=2", "generate.n_continuations=4", "generate.batch_size=3",
        "generate.seconds=0.02", "generate.continuation_prefix_seconds=0.01", "generate.mel_examples=2"])
    data = Digits(d, "mulaw")
    audio.train(cfg, data)
    sdir = audio.generate(cfg, data)
    out = tmp_path / "runs" / "tiny"
    meta = json.loads((sdir / "samples.json").read_text())
    cont = meta["continuations"]
    assert len({r["label"] for r in cont}) == len(cont) == 4  # balanced: four different digits
    for r in cont:
        wave = load_audio(sdir / r["file"])
        opening = mu_law_decode(data.tokens["test"][r["test_index"], :160]).numpy()
        assert len(wave) == 320 and r["prefix_samples"] == 160 and r["generated_samples"] == 160
        np.testing.assert_allclose(wave[:160], opening, **CLOSE["pcm16"])  # the real opening, as PCM16
    res = audio.evaluate(cfg, data)
    c = res["continuation"]
    assert res["continuation_accuracy"] == c["continued_accuracy"] and c["n"] == 4
    for k in ("continued", "real_source", "prefix_only"):
        lo, hi = c[f"{k}_accuracy_ci95"]
        assert 0 <= lo <= c[f"{k}_accuracy"] <= hi <= 1 and len(c[f"{k}_predicted"]) == 4
    assert json.loads((out / "metrics.json").read_text())["continuation"] == json.loads(json.dumps(c))
    page = _Links()
    page.feed((out / "listen.html").read_text())
    assert page.audio == 2 * 2 + 2 + 2  # continuation rows show source + continuation; samples; real clips
    assert len(page.links) == 2 * page.audio and all((out / link).is_file() for link in page.links)




def test_gpu_recipes_are_step_budgets():
    """No wall-clock cap in the audio recipes: sc09_gpu trains a fixed number of steps in one command;
    sc09_h200 cuts its budget into three equal commands (steps_per_call) of the paper-style complex SaShiMi,
    and samples all unconditional clips and all continuations in one batch each."""
    from mambaseq import runs

    for name, calls in (("sc09", 1), ("sc09_gpu", 1), ("sc09_h200", 3)):
        cfg = audio.load_config([f"experiment={name}"])
        tc = runs.train_config(cfg, cfg["data"]["seq_len"])
        assert tc.max_time_s == 0, name
        assert math.ceil(tc.max_steps / (tc.steps_per_call or tc.max_steps)) == calls, name
        if name != "sc09":
            g = cfg["generate"]
            assert tc.seq_len == 16000 and g["batch_size"] >= max(g["n_samples"], g["n_continuations"])
            model = audio.build_model(cfg)
            assert cfg["audio_model"]["complex"] is True and type(model).__name__ == "SaShiMiLM"
            assert sum(p.numel() for p in model.parameters()) > 1e6


def test_a_run_in_calls_of_a_fixed_number_of_steps(tmp_path, request, monkeypatch):
    """A call that ends (steps_per_call) before log_every steps still logs its last window and writes a
    summary and a checkpoint; run_all stops there, and the same command with --resume finishes training,
    samples and evaluates."""
    from mambaseq.audio import Digits
    from mambaseq.training import latest_checkpoint

    d = _noise_digits(tmp_path / "data", rng_for(request))
    over = ["audio_model=mamba", "audio_model.d_model=8", "audio_model.n_layer=1", "audio_model.d_state=4",
            f"data.dir={d}", f"out_dir={tmp_path / 'runs'}", "train.max_steps=3", "train.log_every=10",
            "train.steps_per_call=2", "data.seq_len=64", "train.batch_size=2", "train.progress=false",
            "eval.val_clips=1", "eval.batch_size=1", "eval.nll_clips=1", "classifier.epochs=1",
            "generate.n_samples=2", "generate.n_continuations=2", "generate.seconds=0.01",
            "generate.continuation_prefix_seconds=0.005", "generate.mel_examples=1"]
    cfg = audio.load_config(over)
    out = audio.train(cfg, Digits(d, "mulaw"))
    s = json.loads((out / "train_summary.json").read_text())
    assert s["steps"] == 2 and s["stopped_early"] is True and s["complete"] is False
    assert 0 < s["train_bits_per_sample"] < 9 and 0 < s["val_bits_per_sample"] < 9
    assert latest_checkpoint(out).name == "step_00000002"
    monkeypatch.setattr(audio, "prepare", lambda cfg: d)  # the noise set as it is (no espeak-ng build)
    assert audio.run_all(cfg, resume=True)["test_nll_bits_per_sample"] > 0  # steps 3..3, then the rest
    s = json.loads((out / "train_summary.json").read_text())
    assert s["complete"] and [c["to_step"] for c in s["calls"]] == [2, 3]


def test_old_prefix_setting_is_the_continuation_prefix():
    with pytest.warns(FutureWarning, match="generate.prefix_seconds is now generate.continuation_prefix_seconds"):
        cfg = audio.load_config(["generate.prefix_seconds=0.5"])
    assert cfg["generate"]["continuation_prefix_seconds"] == 0.5
    with pytest.raises(ValueError, match="generate.continuation_prefix_seconds=1.0: must"):
        audio.load_config(["generate.continuation_prefix_seconds=1.0"])
    with pytest.raises(ValueError, match="run_name='a/b'"):
        audio.load_config(["run_name=a/b"])


def test_context_length_lives_under_data():
    """data.seq_len as in the other pipelines; the old train.seq_len is read as data.seq_len, with a warning."""
    assert audio.load_config(["data.seq_len=512"])["data"]["seq_len"] == 512
    with pytest.warns(FutureWarning, match="train.seq_len is now data.seq_len"):
        cfg = audio.load_config(["train.seq_len=256"])
    assert cfg["data"]["seq_len"] == 256 and "seq_len" not in cfg["train"]
