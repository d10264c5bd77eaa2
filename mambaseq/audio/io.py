"""Audio file I/O: read WAV/FLAC (soundfile), mono mix-down, resample to 16 kHz, fix length, atomic write.

Conversion policy (documented; `load_audio` applies it and names the file in every error or warning):
- multi-channel -> mono by averaging channels (speech recordings are near-identical across channels);
- any sample rate in [`MIN_SAMPLE_RATE`, `MAX_SAMPLE_RATE`] -> `sample_rate` (16 kHz) with a polyphase
  resampler (scipy.signal.resample_poly, or torchaudio's sinc resampler when torchaudio imports and
  `resampler="torchaudio"` is asked for); other rates (a damaged header) raise `AudioError`;
- integer PCM is read as float in [-1, 1]; float files are returned as stored (peaks above 1 are clipped by
  the quantizer later); NaN or infinite samples raise;
- empty, unreadable or non-audio files raise `AudioError` (a ValueError);
- a file shorter than its header declares (an interrupted download or copy: libsndfile reports the
  declared size "should be" smaller, or the decoder returns fewer frames than the stream header states)
  raises `AudioError`; with `truncated="pad"` it is padded with silence to the declared length instead,
  with an `AudioWarning`;
- shorter than `min_seconds` raises; `fix_length` pads (centred, with zeros) or trims to an exact length.

`save_wav` writes only what `load_audio` reads back unchanged: a finite float waveform (T,) with T >= 1.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from mambaseq.fileio import atomic_path

SAMPLE_RATE = 16_000
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000  # Hz; outside this a header is damaged, not audio
TRUNCATED_POLICIES = ("error", "pad")
# bytes per sample of the uncompressed subtypes (a truncated compressed stream cannot be sized)
_SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
                 "ULAW": 1, "ALAW": 1}
# libsndfile's header report: "data : 64000 (should be 31978)" = chunk size declared vs present in the file
_CHUNK_SIZE = re.compile(r"^\s*\S+\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)
_SIZE_UNKNOWN = {0, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1}  # streamed headers: size not filled in


class AudioError(ValueError):
    """A file that cannot be used as audio (corrupt, empty, not audio, too short, ...)."""


class AudioWarning(UserWarning):
    """An audio file that was used after a repair (e.g. a truncated file padded to its declared length)."""


def _check_waveform(x: np.ndarray, what: str, ndim: int | None = None) -> np.ndarray:
    """`x` as a finite floating array (of `ndim` dims, if given), else ValueError naming `what`."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        hint = " (integer PCM: divide by 2**(bits-1), e.g. 32768 for int16, first)" if x.dtype.kind in "iu" else ""
        raise ValueError(f"{what}: expected a float waveform in [-1, 1], got dtype {x.dtype}{hint}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{what}: expected {ndim} dimension(s) (T,) , got shape {x.shape}")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"{what}: expected at least one sample along the last axis, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: {int((~np.isfinite(x)).sum())} NaN or infinite sample(s)")
    return x


def _check_rate(sr: object, what: str) -> int:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise ValueError(f"{what} must be an int in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz, got {sr!r}")
    return int(sr)


def _missing_frames(info: "sf._SoundFileInfo") -> int | None:
    """Frames the header declares beyond the end of the file: 0 if complete, None if bytes are missing
    but the (compressed) subtype does not say how many frames they held."""
    missing = max((int(d) - int(a) for d, a in _CHUNK_SIZE.findall(info.extra_info)
                   if int(d) > int(a) and int(d) not in _SIZE_UNKNOWN), default=0)
    width = _SAMPLE_BYTES.get(info.subtype)
    if not missing:
        return 0
    return None if width is None else math.ceil(missing / (width * info.channels))


def resample(x: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE, resampler: str = "scipy") -> np.ndarray:
    """Resample float waveform `x` (..., T) from `orig_sr` to `target_sr` (Hz) along the last axis -> float32
    (..., T'), T' = ceil(T * target_sr / orig_sr).

    Raises ValueError for a non-float, empty or non-finite `x`, or rates outside
    [`MIN_SAMPLE_RATE`, `MAX_SAMPLE_RATE`].
    """
    x = _check_waveform(x, "resample: x")
    _check_rate(orig_sr, "resample: orig_sr")
    _check_rate(target_sr, "resample: target_sr")
    if resampler not in ("scipy", "torchaudio"):
        raise ValueError(f"resampler must be 'scipy' or 'torchaudio', got {resampler!r}")
    if orig_sr == target_sr:
        return x.astype(np.float32, copy=False)
    if resampler == "torchaudio":
        import torch
        import torchaudio.functional as taf  # optional extra; raises ImportError with its own message

        return taf.resample(torch.from_numpy(np.ascontiguousarray(x, np.float32)), orig_sr, target_sr).numpy()
    frac = Fraction(int(target_sr), int(orig_sr))  # e.g. 22050 -> 16000 is up 320, down 441
    return resample_poly(x, frac.numerator, frac.denominator, axis=-1).astype(np.float32)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = SAMPLE_RATE,
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
    resampler: str = "scipy",
    truncated: str = "error",
) -> np.ndarray:
    """Read a WAV/FLAC/OGG file -> mono float32 waveform (T,) at `sample_rate` Hz (see the module policy).

    Raises AudioError (naming the file) if it is missing, empty, unreadable, not audio, holds NaN/inf
    samples, has a sample rate outside [`MIN_SAMPLE_RATE`, `MAX_SAMPLE_RATE`], or is shorter than
    `min_seconds`; longer than `max_seconds` (if given) also raises: callers that want trimming use
    `fix_length`. A truncated file (fewer frames than its header declares) raises AudioError
    (`truncated="error"`), or is padded with zeros to the declared length with an `AudioWarning`
    (`truncated="pad"`).
    """
    if truncated not in TRUNCATED_POLICIES:
        raise ValueError(f"truncated must be one of {TRUNCATED_POLICIES}, got {truncated!r}")
    _check_rate(sample_rate, "load_audio: sample_rate")
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: no such audio file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: file is empty (0 bytes), expected a WAV/FLAC audio file")
    try:
        info = sf.info(str(p))
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)  # (T, channels)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{p}: not a readable audio file (expected WAV/FLAC): {e}") from e
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(f"{p}: header gives a sample rate of {sr} Hz, outside [{MIN_SAMPLE_RATE}, "
                         f"{MAX_SAMPLE_RATE}] (damaged header?)")
    missing = _missing_frames(info)
    if missing == 0 and data.shape[0] < info.frames:  # stream header (FLAC/OGG) counts more than decoded
        missing = info.frames - data.shape[0]
    if missing != 0:
        declared = "an unknown number of" if missing is None else f"{data.shape[0] + missing}"
        what = (f"{p}: truncated audio file: the header declares {declared} frames, the file holds "
                f"{data.shape[0]} (an interrupted download or copy?)")
        if missing is None:
            raise AudioError(what)
        if truncated == "error":
            raise AudioError(f"{what}; load_audio(..., truncated='pad') pads it with silence instead")
        warnings.warn(f"{what}; the missing {missing} frames are filled with silence (truncated='pad')",
                      AudioWarning, stacklevel=2)
        data = np.concatenate([data, np.zeros((missing, data.shape[1]), data.dtype)])
    if data.shape[0] == 0:
        raise AudioError(f"{p}: audio file holds no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{p}: audio holds NaN or infinite samples")
    x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    x = resample(x, sr, sample_rate, resampler)
    dur = x.shape[0] / sample_rate
    if dur < min_seconds:
        raise AudioError(f"{p}: {dur:.3f} s of audio, expected at least {min_seconds} s")
    if max_seconds is not None and dur > max_seconds:
        raise AudioError(f"{p}: {dur:.3f} s of audio, expected at most {max_seconds} s")
    return x


def fix_length(x: np.ndarray, length: int, mode: str = "center") -> np.ndarray:
    """Pad with zeros or trim `x` (..., T) along the last axis to exactly `length` samples -> (..., length).

    mode "center" places a short clip in the middle (speech digits are centred in SC09) and trims
    long clips symmetrically; "end" pads/trims at the end. Raises ValueError for `length` < 1, an unknown
    mode or a 0-d `x`.
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length <= 0:
        raise ValueError(f"length must be a positive int, got {length!r}")
    if mode not in ("center", "end"):
        raise ValueError(f"mode must be 'center' or 'end', got {mode!r}")
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"fix_length expects a waveform (..., T), got a 0-d array")
    n = x.shape[-1]
    if n >= length:
        start = (n - length) // 2 if mode == "center" else 0
        return x[..., start : start + length]
    left = (length - n) // 2 if mode == "center" else 0
    out = np.zeros(x.shape[:-1] + (length,), dtype=x.dtype)
    out[..., left : left + n] = x
    return out


def save_wav(path: str | os.PathLike, x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write mono float waveform `x` (T,), T >= 1, as 16-bit PCM WAV at `sample_rate` Hz, atomically (temp
    file, read back and checked, then renamed); samples beyond [-1, 1] are clipped.

    Raises ValueError (naming `path`) for integer PCM or other non-float samples, NaN/inf samples, a shape
    other than (T,), T = 0, or a sample rate outside [`MIN_SAMPLE_RATE`, `MAX_SAMPLE_RATE`]; AudioError if
    the written file does not read back with T frames.
    """
    p = Path(path)
    x = _check_waveform(x, f"save_wav {p}", ndim=1)
    sample_rate = _check_rate(sample_rate, f"save_wav {p}: sample_rate")
    with atomic_path(p) as tmp:
        sf.write(tmp, np.clip(x.astype(np.float32), -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
        info = sf.info(tmp)
        if info.frames != x.shape[0] or _missing_frames(info):
            raise AudioError(f"{p}: written WAV reads back {info.frames} frames, expected {x.shape[0]}")
    return p
