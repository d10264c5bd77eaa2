"""Spoken-digit data sets: synthetic split by voice, Speech Commands layout, bad input, atomic builds."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from mambaseq.audio import AudioError
from mambaseq.data_prep import sc09
from seeding import current_seed, rng_for
from seeding import current_seed

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                                  reason="needs espeak-ng and sox (apt-get install -y espeak-ng sox)")


@needs_espeak
def test_synthetic_split_by_voice_and_idempotent(tmp_path, request):
    params = sc09.SynthParams(accents_per_voice=1, max_voices=8, seed=int(rng_for(request).integers(1000)))
    out = sc09.build_synthetic(tmp_path / "d", params, workers=2)
    m = json.loads((out / "manifest.json").read_text())
    assert m["synthetic"] is True and "SYNTHETIC" in m["note"]
    spk = {s: set(m["splits"][s]["speakers"]) for s in sc09.SPLITS}
    assert all(spk[s] for s in sc09.SPLITS)
    assert not (spk["train"] & spk["test"]) and not (spk["train"] & spk["val"]) and not (spk["val"] & spk["test"])
    import csv

    rows = list(csv.DictReader(open(out / "clips.csv")))
    for r in rows:  # every clip's voice variant belongs to its split only
        assert r["speaker"] in spk[r["split"]] and r["voice"].endswith("+" + r["speaker"])
    for s in sc09.SPLITS:
        a = np.load(out / f"{s}_audio.npy")
        lab = np.load(out / f"{s}_labels.npy")
        assert a.shape == (len(spk[s]) * 10, 16000) and a.dtype == np.int16
        assert sorted(np.bincount(lab, minlength=10)) == [len(spk[s])] * 10
        assert (np.abs(a).max(1) > 1000).all()  # every clip holds speech
    mtime = (out / "manifest.json").stat().st_mtime_ns
    sc09.build_synthetic(tmp_path / "d", params, workers=2)  # same parameters: no-op
    assert (out / "manifest.json").stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temp dirs left behind


def _fake_speech_commands(root, stereo_44k=False, bad=None):
    rng = np.random.default_rng(current_seed())
    files = []
    for d in sc09.DIGITS:
        (root / d).mkdir(parents=True)
        for spk in ("aa11", "bb22", "cc33"):
            f = f"{d}/{spk}_nohash_0.wav"
            x = (rng.uniform(-0.3, 0.3, 12000)).astype(np.float32)  # 0.75 s: padded to 1 s
            sf.write(root / f, x, 16000)
            files.append(f)
    if stereo_44k:
        sf.write(root / "zero/dd44_nohash_0.wav", rng.uniform(-0.2, 0.2, (44100, 2)).astype(np.float32), 44100)
    if bad is not None:
        (root / "one" / "ee55_nohash_0.wav").write_bytes(bad)
    (root / "validation_list.txt").write_text("\n".join(f for f in files if "bb22" in f))
    (root / "testing_list.txt").write_text("\n".join(f for f in files if "cc33" in f))


def test_speech_commands_layout(tmp_path):
    _fake_speech_commands(tmp_path / "sc", stereo_44k=True)
    out = sc09.build_speech_commands(tmp_path / "sc", tmp_path / "out")
    m = json.loads((out / "manifest.json").read_text())
    assert m["synthetic"] is False
    assert m["splits"]["train"]["speakers"] == ["aa11", "dd44"]
    assert m["splits"]["val"]["clips"] == 10 and m["splits"]["test"]["clips"] == 10
    a = np.load(out / "train_audio.npy")
    assert a.shape == (11, 16000)  # the 44.1 kHz stereo clip was mixed down, resampled and trimmed to 1 s


@pytest.mark.parametrize("bad", [b"", b"not a wav file at all"], ids=["empty", "garbage"])
def test_bad_clip_names_file_and_writes_nothing(tmp_path, bad):
    _fake_speech_commands(tmp_path / "sc", bad=bad)
    with pytest.raises(AudioError, match="ee55_nohash_0.wav"):
        sc09.build_speech_commands(tmp_path / "sc", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sc"]  # no output, no temp dir
    out = sc09.build_speech_commands(tmp_path / "sc", tmp_path / "out", on_error="skip")
    m = json.loads((out / "manifest.json").read_text())
    assert len(m["skipped"]) == 1 and "ee55" in m["skipped"][0]


def test_not_a_speech_commands_folder(tmp_path):
    (tmp_path / "zero").mkdir()
    with pytest.raises(ValueError, match="not a Speech Commands folder"):
        sc09.build_speech_commands(tmp_path, tmp_path / "out")


def test_missing_tools_message(monkeypatch, tmp_path):
    monkeypatch.setattr(sc09.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install -y espeak-ng sox"):
        sc09.build_synthetic(tmp_path / "d")


def test_prebuilt_set_needs_no_tools(monkeypatch, tmp_path, request):
    """A set built elsewhere (e.g. carried to a GPU machine without espeak-ng/sox) is reused as it is."""
    params = sc09.SynthParams(max_voices=int(rng_for(request).integers(1, 50)))
    pdict = sc09.synthetic_params(params)
    out = tmp_path / "d"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"synthetic": True, "params_hash": sc09.params_hash(pdict)}))
    monkeypatch.setattr(sc09.shutil, "which", lambda name: None)
    assert sc09.build_synthetic(out, params) == out
    with pytest.raises(RuntimeError, match="apt-get install -y espeak-ng sox"):  # other parameters: a rebuild
        sc09.build_synthetic(out, sc09.SynthParams(max_voices=params.max_voices + 1))
