"""Audio: waveform I/O, 8-bit quantization, mel spectrograms, digit classifier metrics."""

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
