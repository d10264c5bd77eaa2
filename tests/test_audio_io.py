"""Audio file I/O: conversions (stereo, rate, length) and clear errors for bad files."""

import numpy as np
import pytest
import soundfile as sf

from mambaseq.audio import AudioError, fix_length, load_audio, save_wav
from seeding import rng_for
from seeding import current_seed
from tolerances import CLOSE


def _tone(sr: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("sr,fmt", [(16000, "WAV"), (22050, "WAV"), (44100, "FLAC"), (8000, "FLAC")],
                         ids=["wav16k", "wav22k", "flac44k", "flac8k"])
def test_resampled_to_16k_keeps_pitch(tmp_path, sr, fmt):
    p = tmp_path / f"a.{fmt.lower()}"
    sf.write(p, _tone(sr, 0.5), sr, format=fmt)
    x = load_audio(p)
    assert x.dtype == np.float32 and x.shape == (8000,)
    peak_hz = np.argmax(np.abs(np.fft.rfft(x))) * 16000 / len(x)
    assert abs(peak_hz - 440) < 4


def test_stereo_is_mixed_down(tmp_path):
    left, right = _tone(16000, 0.25), _tone(16000, 0.25, 1000.0)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16000)
    x = load_audio(tmp_path / "s.wav")
    np.testing.assert_allclose(x, (left + right) / 2, **CLOSE["pcm16_mix"])


@pytest.mark.parametrize("content,match", [(b"", "empty"), (b"this is not audio at all" * 10, "not a readable"),
                                           (b"RIFF\x10\x00\x00\x00WAVEfmt ", "not a readable")],
                         ids=["empty", "text", "truncated_header"])
def test_bad_files_raise_naming_file(tmp_path, content, match):
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(AudioError, match=match) as ei:
        load_audio(p)
    assert "bad.wav" in str(ei.value)


def test_missing_and_length_limits(tmp_path):
    with pytest.raises(AudioError, match="no such"):
        load_audio(tmp_path / "nope.wav")
    sf.write(tmp_path / "short.wav", _tone(16000, 0.1), 16000)
    with pytest.raises(AudioError, match="at least"):
        load_audio(tmp_path / "short.wav", min_seconds=0.5)
    with pytest.raises(AudioError, match="at most"):
        load_audio(tmp_path / "short.wav", max_seconds=0.05)


@pytest.mark.parametrize("n,mode", [(10, "center"), (10, "end"), (40, "center"), (40, "end"), (20, "center")])
def test_fix_length(n, mode):
    x = np.arange(1, n + 1, dtype=np.float32)
    y = fix_length(x, 20, mode)
    assert y.shape == (20,)
    if n <= 20:
        assert y.sum() == x.sum() and (y[0] == 0) == (mode == "center" and n < 20)
    else:
        assert y[0] == (11 if mode == "center" else 1)


def test_save_wav_atomic_round_trip(tmp_path, request):
    x = rng_for(request).uniform(-1, 1, 1600).astype(np.float32)
    p = save_wav(tmp_path / "sub" / "o.wav", x)
    assert [f.name for f in p.parent.iterdir()] == ["o.wav"]  # no temp file left behind
    np.testing.assert_allclose(load_audio(p), x, **CLOSE["pcm16"])
