"""Log-mel spectrograms (pure torch: torch.stft + an HTK mel filterbank) and mel-spectrogram PNGs (one clip, or a grid)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .io import SAMPLE_RATE


def mel_filterbank(n_mels: int = 64, n_fft: int = 400, sample_rate: int = SAMPLE_RATE,
                   f_min: float = 20.0, f_max: float | None = None) -> Tensor:
    """Triangular HTK-mel filters (n_mels, n_fft // 2 + 1), each peaking at 1."""
    f_max = f_max or sample_rate / 2
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    pts = torch.linspace(mel(f_min), mel(f_max), n_mels + 2)
    hz = 700.0 * (10 ** (pts / 2595.0) - 1.0)  # (n_mels + 2,) band edges
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0.0)


class LogMel(torch.nn.Module):
    """Waveform (b, T) float in [-1, 1] -> log-mel (b, n_mels, frames); 25 ms windows, 10 ms hop at 16 kHz."""

    def __init__(self, n_mels: int = 64, n_fft: int = 400, hop: int = 160, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fb", mel_filterbank(n_mels, n_fft, sample_rate), persistent=False)

    def forward(self, wav: Tensor) -> Tensor:
        if wav.shape[-1] < self.n_fft:  # STFT's reflect padding needs at least one window: pad short clips
            wav = torch.nn.functional.pad(wav, (0, self.n_fft - wav.shape[-1]))
        spec = torch.stft(wav.float(), self.n_fft, self.hop, window=self.window, return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (b, n_fft/2+1, frames)
        return torch.log(self.fb @ power + 1e-6)


# Colour scale of the per-clip PNGs, in log power: silence (1e-6 + fb @ power) sits near -13.8; the loudest
# band of a synthetic test clip peaks at 3.4 to 7.8 (measured over 200 clips) and of a full-scale DC signal at 8.8
MEL_VMIN, MEL_VMAX = -12.0, 8.0


def _draw_mel(ax, mel: np.ndarray, vmax: float) -> None:
    """One log-mel (n_mels, frames) on ``ax``, low frequencies at the bottom, no ticks."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.imshow(mel, origin="lower", aspect="auto", vmin=MEL_VMIN, vmax=vmax)


def save_mel(path: str | os.PathLike, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """The log-mel spectrogram (64 bands, 25 ms windows, 10 ms hop; ``LogMel``) of one waveform (T,) float in
    [-1, 1] as a 320 x 160 px PNG, written atomically; every clip on one fixed colour scale
    (``MEL_VMIN``..``MEL_VMAX``), so loudness compares by eye across clips. Raises ValueError for a waveform
    that is not 1-D or empty."""
    from mambaseq.reports import pyplot, save_figure

    w = np.asarray(wave, dtype=np.float32)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"save_mel {path}: expected a waveform (T,) with T >= 1, got shape {w.shape}")
    mel = LogMel(sample_rate=sample_rate)(torch.from_numpy(w)[None])[0].numpy()
    fig = pyplot().figure(figsize=(3.2, 1.6))
    ax = fig.add_axes((0, 0, 1, 1))
    _draw_mel(ax, mel, MEL_VMAX)
    return save_figure(fig, path, dpi=100)


def save_mel_grid(path: str | os.PathLike, rows: dict[str, np.ndarray], titles: dict[str, list[str]] | None = None,
                  sample_rate: int = SAMPLE_RATE, max_cols: int = 8) -> Path:
    """One PNG with a row of mel spectrograms per named set (e.g. {"generated": (n, T), "real": (n, T)})."""
    from mambaseq.reports import pyplot, save_figure

    plt = pyplot()
    logmel = LogMel(sample_rate=sample_rate)
    ncol = min(max_cols, max(len(v) for v in rows.values()))
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.0 * ncol, 2.0 * len(rows)), squeeze=False)
    for r, (name, wavs) in enumerate(rows.items()):
        mels = logmel(torch.as_tensor(np.asarray(wavs[:ncol], dtype=np.float32))).numpy()
        for c in range(ncol):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(mels):
                _draw_mel(ax, mels[c], max(2.0, float(mels.max())))  # the grid's own peak (as before)
                if titles and name in titles:
                    ax.set_title(titles[name][c], fontsize=7)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)
