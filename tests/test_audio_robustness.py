"""Audio front end on bad input (issue 14, kind 2): every public function handles a documented input or
raises AudioError/ValueError naming what was wrong -- truncated and corrupted files, NaN/inf, integer PCM,
wrong shapes, declared-vs-actual length, on load and on save."""

import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from mambaseq.audio import AudioError, AudioWarning, fix_length, load_audio, resample, save_wav
from mambaseq.audio import quantize as Q
from seeding import rng_for
from tolerances import CLOSE

SUBTYPES = ("PCM_16", "PCM_24", "FLOAT", "PCM_U8")
FORMATS = (("WAV", "wav"), ("AIFF", "aiff"), ("W64", "w64"))


def _tone(n: int, channels: int = 1) -> np.ndarray:
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)
    return np.stack([x] * channels, 1) if channels > 1 else x


@pytest.mark.parametrize("fmt,ext", FORMATS, ids=[e for _, e in FORMATS])
@pytest.mark.parametrize("subtype", SUBTYPES)
@pytest.mark.parametrize("channels", [1, 2])
def test_truncated_file_raises_or_pads_to_declared_length(tmp_path, request, fmt, ext, subtype, channels):
    """The case `truncated_wav_accepted.py` and its kind: cut anywhere inside the sample data."""
    if fmt == "AIFF" and subtype == "PCM_U8":
        pytest.skip("AIFF has no unsigned 8-bit subtype")
    full = tmp_path / f"full.{ext}"
    sf.write(full, _tone(16000, channels), 16000, subtype=subtype, format=fmt)
    raw = full.read_bytes()
    header = len(raw) - 16000 * channels * {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4, "PCM_U8": 1}[subtype]
    rng = rng_for(request)
    for cut in [header + (len(raw) - header) // 2, len(raw) - 1, *rng.integers(header + 1, len(raw), 3)]:
        p = tmp_path / f"cut.{ext}"
        p.write_bytes(raw[:cut])
        with pytest.raises(AudioError, match="truncated") as ei:
            load_audio(p)
        assert str(p) in str(ei.value) and "16000" in str(ei.value)
        with pytest.warns(AudioWarning, match="truncated"):
            x = load_audio(p, truncated="pad")
        assert x.shape == (16000,) and np.isfinite(x).all()


@pytest.mark.parametrize("fmt,ext", [("WAV", "wav"), ("FLAC", "flac")])
def test_complete_files_load_without_warning(tmp_path, fmt, ext):
    p = tmp_path / f"ok.{ext}"
    sf.write(p, _tone(12345), 16000, format=fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_audio(p).shape == (12345,)


def test_truncated_flac_names_file(tmp_path):
    p = tmp_path / "cut.flac"
    sf.write(tmp_path / "full.flac", _tone(16000), 16000, format="FLAC")
    p.write_bytes((tmp_path / "full.flac").read_bytes()[:2000])
    with pytest.raises(AudioError) as ei:
        load_audio(p)
    assert str(p) in str(ei.value)


def _corrupt(raw: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    b = bytearray(raw)
    kind = ("truncate", "flip", "append", "header", "zero_tail")[int(rng.integers(5))]
    if kind == "truncate":
        b = b[: int(rng.integers(0, len(b)))]
    elif kind == "flip":
        for i in rng.integers(0, len(b), int(rng.integers(1, 20))):
            b[i] ^= 1 << int(rng.integers(8))
    elif kind == "append":
        b += rng.integers(0, 256, int(rng.integers(1, 500)), dtype=np.uint8).tobytes()
    elif kind == "header":  # overwrite 4 bytes inside the first 60 (sizes, rate, format fields)
        i = int(rng.integers(0, 56))
        b[i : i + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
    else:
        n = int(rng.integers(1, len(b)))
        b[-n:] = bytes(n)
    return kind, bytes(b)


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT", "DOUBLE"])
def test_random_corruption_never_crashes_or_returns_bad_samples(tmp_path, request, subtype):
    """Property (3 x 80 corrupted files): load_audio returns a finite float32 (T,) waveform, or raises
    AudioError naming the file; nothing else escapes (no IndexError, no MemoryError, no NaN)."""
    sf.write(tmp_path / "src.wav", _tone(4000, 2), 16000, subtype=subtype)
    raw = (tmp_path / "src.wav").read_bytes()
    rng = rng_for(request)
    outcomes = {"ok": 0, "error": 0}
    for i in range(80):
        kind, data = _corrupt(raw, rng)
        p = tmp_path / f"c{i}.wav"
        p.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a silent repair would be a bug too
                x = load_audio(p)
        except AudioError as e:
            assert str(p) in str(e), (kind, str(e))
            outcomes["error"] += 1
            continue
        assert x.dtype == np.float32 and x.ndim == 1 and x.size > 0 and np.isfinite(x).all(), kind
        outcomes["ok"] += 1
    assert outcomes["error"] > 0  # the corruptions do reach the error paths


def test_nan_and_inf_samples_in_a_float_file(tmp_path):
    x = _tone(1000)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[500] = bad
        p = tmp_path / "nan.wav"
        sf.write(p, y, 16000, subtype="FLOAT")
        with pytest.raises(AudioError, match="NaN or infinite") as ei:
            load_audio(p)
        assert str(p) in str(ei.value)


def test_integer_pcm_files_read_as_float(tmp_path):
    pcm = (np.arange(-8, 8) * 4096).astype(np.int16)
    sf.write(tmp_path / "i.wav", pcm, 16000, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(tmp_path / "i.wav"), pcm / 32768.0)


@pytest.mark.parametrize("sr", [16000, 8000, 44100])
def test_save_load_round_trip_random_lengths(tmp_path, request, sr):
    """Property: any finite float (T,) with T >= 1 saves and reads back with T frames, error <= 1 LSB."""
    rng = rng_for(request)
    for n in [1, 2, 3, *rng.integers(4, 3000, 5)]:
        x = rng.uniform(-1.2, 1.2, int(n)).astype(rng.choice([np.float32, np.float64]))
        p = save_wav(tmp_path / f"r{n}.wav", x, sr)
        assert sf.info(p).frames == n and sf.info(p).samplerate == sr
        y, _ = sf.read(p, dtype="float32")
        np.testing.assert_allclose(y, np.clip(x, -1, 1), **CLOSE["pcm16"])
    assert all(not f.name.startswith(".") for f in tmp_path.iterdir())  # no temp file left


@pytest.mark.parametrize(
    "x,sr,match",
    [((np.arange(100) * 100).astype(np.int16), 16000, "int16.*integer PCM"),
     (np.array([0.1, np.nan, 0.2]), 16000, "NaN or infinite"),
     (np.array([0.1, np.inf]), 16000, "NaN or infinite"),
     (np.zeros((2, 100)), 16000, r"shape \(2, 100\)"),
     (np.zeros(0), 16000, "at least one sample"),
     (np.array(0.5), 16000, "shape"),
     (np.array([True, False]), 16000, "dtype bool"),
     (np.zeros(10), 0, "sample_rate"),
     (np.zeros(10), 16000.0, "sample_rate"),
     (np.zeros(10), -16000, "sample_rate")],
    ids=["int16", "nan", "inf", "2d", "empty", "0d", "bool", "rate0", "rate_float", "rate_negative"],
)
def test_save_wav_rejects_bad_input_and_writes_nothing(tmp_path, x, sr, match):
    p = tmp_path / "out.wav"
    with pytest.raises(ValueError, match=match) as ei:
        save_wav(p, x, sr)
    assert str(p) in str(ei.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "call,match",
    [(lambda: resample(np.zeros(10, np.int16), 8000), "int16"),
     (lambda: resample(np.array([0.0, np.nan]), 8000), "NaN"),
     (lambda: resample(np.zeros(0), 8000), "at least one sample"),
     (lambda: resample(np.zeros(10), 0), "orig_sr"),
     (lambda: resample(np.zeros(10), 8000, 10**9), "target_sr"),
     (lambda: resample(np.zeros(10), 8000, resampler="sox"), "resampler"),
     (lambda: fix_length(np.zeros(5), 0), "length"),
     (lambda: fix_length(np.zeros(5), 2.5), "length"),
     (lambda: fix_length(np.zeros(5), 3, "start"), "mode"),
     (lambda: fix_length(np.array(1.0), 3), "0-d")],
    ids=["resample_int", "resample_nan", "resample_empty", "rate0", "rate_huge", "resampler", "len0", "len_float",
         "mode", "fix_0d"],
)
def test_resample_and_fix_length_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_load_audio_rejects_bad_arguments(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(100), 16000)
    with pytest.raises(ValueError, match="truncated"):
        load_audio(tmp_path / "a.wav", truncated="ignore")
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio(tmp_path / "a.wav", sample_rate=0)


# ----------------------------------------------------------------------------- quantization
@pytest.mark.parametrize("method", Q.QUANTIZERS)
def test_nan_and_inf_have_no_token(method):
    """The case `mulaw_nan_token.py`: NaN used to become the int64 minimum."""
    for bad in (np.nan, np.inf, -np.inf):
        for x in (np.array([0.25, bad, -0.25]), torch.tensor([[0.0, bad]])):
            with pytest.raises(ValueError, match="NaN or infinite"):
                Q.encode(x, method)


@pytest.mark.parametrize("method", Q.QUANTIZERS)
@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint8, np.bool_, np.complex64])
def test_non_float_waveforms_rejected(method, dtype):
    with pytest.raises(ValueError, match="floating"):
        Q.encode(np.zeros(4, dtype), method)


@pytest.mark.parametrize("method", Q.QUANTIZERS)
def test_random_waveforms_tokens_in_range_or_error(request, method):
    """Property (200 arrays of random shape, scale and dtype, some with NaN/inf): the encoder returns ids
    in [0, 255] of the input's shape, or raises ValueError exactly when a sample is not finite."""
    rng = rng_for(request)
    for _ in range(200):
        shape = tuple(int(s) for s in rng.integers(0, 6, int(rng.integers(0, 4))))
        x = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3)).astype(rng.choice([np.float16, np.float32,
                                                                                          np.float64]))
        if x.size and rng.random() < 0.3:
            x.flat[int(rng.integers(x.size))] = rng.choice([np.nan, np.inf, -np.inf])
        if not np.isfinite(x).all():
            with pytest.raises(ValueError):
                Q.encode(x, method)
            continue
        q = Q.encode(x, method)
        assert q.shape == x.shape and q.dtype == np.int64 and ((q >= 0) & (q <= 255)).all()
