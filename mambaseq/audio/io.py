"""Audio file I/O: read WAV/FLAC (soundfile), mono mix-down, resample to 16 kHz, fix length, atomic write.

Conversion policy (documented; `load_audio` applies it and names the file in every error):
- multi-channel -> mono by averaging channels (speech recordings are near-identical across channels);
- any sample rate -> `sample_rate` (16 kHz) with a polyphase resampler (scipy.signal.resample_poly, or
  torchaudio's sinc resampler when torchaudio imports and `resampler="torchaudio"` is asked for);
- integer PCM is read as float in [-1, 1]; float files with peaks above 1 are clipped by the quantizer later;
- empty, unreadable or non-audio files raise `AudioError` (a ValueError);
- shorter than `min_seconds` raises; `fix_length` pads (centred, with zeros) or trims to an exact length.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """A file that cannot be used as audio (corrupt, empty, not audio, too short, ...)."""


def resample(x: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE, resampler: str = "scipy") -> np.ndarray:
    """Resample float waveform `x` (..., T) from `orig_sr` to `target_sr` along the last axis -> (..., T')."""
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got orig_sr={orig_sr}, target_sr={target_sr}")
    if orig_sr == target_sr:
        return x.astype(np.float32, copy=False)
    if resampler == "torchaudio":
        import torch
        import torchaudio.functional as taf  # optional extra; raises ImportError with its own message

        return taf.resample(torch.from_numpy(np.ascontiguousarray(x, np.float32)), orig_sr, target_sr).numpy()
    if resampler != "scipy":
        raise ValueError(f"resampler must be 'scipy' or 'torchaudio', got {resampler!r}")
    frac = Fraction(target_sr, orig_sr)  # e.g. 22050 -> 16000 is up 320, down 441
    return resample_poly(x, frac.numerator, frac.denominator, axis=-1).astype(np.float32)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
    resampler: str = "scipy",
) -> np.ndarray:
    """Read a WAV/FLAC/OGG file -> mono float32 waveform (T,) at `sample_rate`, values in [-1, 1].

    Raises AudioError (naming the file) if it is missing, empty, unreadable, not audio, or shorter than
    `min_seconds`; longer than `max_seconds` (if given) also raises: callers that want trimming use
    `fix_length`.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such audio file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: file is empty (0 bytes), expected a WAV/FLAC audio file")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)  # (T, channels)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"{p}: not a readable audio file (expected WAV/FLAC): {e}") from e
    if data.shape[0] == 0:
        raise AudioError(f"{p}: audio file holds no samples")
    x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(x).all():
        raise AudioError(f"{p}: audio holds NaN or infinite samples")
    x = resample(x, sr, sample_rate, resampler)
    dur = x.shape[0] / sample_rate
    if dur < min_seconds:
        raise AudioError(f"{p}: {dur:.3f} s of audio, expected at least {min_seconds} s")
    if max_seconds is not None and dur > max_seconds:
        raise AudioError(f"{p}: {dur:.3f} s of audio, expected at most {max_seconds} s")
    return x


def fix_length(x: np.ndarray, length: int, mode: str = "center") -> np.ndarray:
    """Pad with zeros or trim `x` (T,) to exactly `length` samples.

    mode "center" places a short clip in the middle (speech digits are centred in SC09) and trims
    long clips symmetrically; "end" pads/trims at the end.
    """
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    n = x.shape[-1]
    if mode not in ("center", "end"):
        raise ValueError(f"mode must be 'center' or 'end', got {mode!r}")
    if n >= length:
        start = (n - length) // 2 if mode == "center" else 0
        return x[..., start : start + length]
    left = (length - n) // 2 if mode == "center" else 0
    out = np.zeros(x.shape[:-1] + (length,), dtype=x.dtype)
    out[..., left : left + n] = x
    return out


def save_wav(path: str | os.PathLike, x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float waveform `x` (T,) as 16-bit PCM WAV atomically (temp file, then rename)."""
    p = Path(path)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"save_wav expects a mono waveform of shape (T,), got {x.shape}")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        sf.write(tmp, np.clip(x, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p
