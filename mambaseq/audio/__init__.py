"""Audio: waveform I/O, 8-bit quantization, the spoken-digit data set, mel spectrograms, digit classifier metrics."""

from .digits import CLIP_LEN, DIGITS, SPLITS, Digits, balanced_pick, spread, with_start
from .io import SAMPLE_RATE, AudioError, AudioWarning, fix_length, load_audio, resample, save_wav
from .quantize import (
    N_CLASSES,
    QUANTIZERS,
    decode,
    encode,
    linear_decode,
    linear_encode,
    mu_law_decode,
    mu_law_encode,
    silence_token,
)

__all__ = [
    "CLIP_LEN",
    "DIGITS",
    "SPLITS",
    "Digits",
    "balanced_pick",
    "spread",
    "with_start",
    "SAMPLE_RATE",
    "AudioError",
    "AudioWarning",
    "fix_length",
    "load_audio",
    "resample",
    "save_wav",
    "N_CLASSES",
    "QUANTIZERS",
    "decode",
    "encode",
    "linear_decode",
    "linear_encode",
    "mu_law_decode",
    "mu_law_encode",
    "silence_token",
]
