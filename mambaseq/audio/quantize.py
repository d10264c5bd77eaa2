"""8-bit waveform quantization: mu-law (WaveNet / SaShiMi) and linear, 256 classes, with inverses.

Waveforms are float in [-1, 1] (values outside are clipped, since a 16-bit PCM file cannot hold them
either); tokens are int64 class ids in [0, 255]. Every function accepts a torch tensor or a numpy array of
any shape and returns the same kind, shape preserved.

Encoders raise ValueError for integer (e.g. int16 PCM: scale to [-1, 1] first) or complex waveforms and for
NaN/inf samples, which have no class; decoders raise ValueError for non-integer tokens or ids outside
[0, 255].
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)

N_CLASSES = 256
MU = N_CLASSES - 1  # 255
QUANTIZERS = ("mulaw", "linear")


def _to_torch(x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, bool]:
    if isinstance(x, (np.ndarray, np.generic)):  # a numpy scalar is a 0-d array
        return torch.from_numpy(np.asarray(x, order="C")), True  # not ascontiguousarray: keeps 0-d
    if isinstance(x, torch.Tensor):
        return x, False
    raise TypeError(f"expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _check_waveform(t: torch.Tensor) -> None:
    if not t.is_floating_point():
        hint = " (integer PCM? divide by 2**(bits-1), e.g. 32768 for int16)" if not t.is_complex() else ""
        raise ValueError(f"waveform must be a real floating tensor/array in [-1, 1], got dtype {t.dtype}{hint}")
    if t.numel() and not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"waveform holds {n_bad} NaN or infinite sample(s), which have no class id")


def _check_tokens(q: torch.Tensor) -> None:
    if q.is_floating_point() or q.is_complex():
        raise ValueError(f"tokens must be an integer tensor, got dtype {q.dtype}")
    if q.numel() and (int(q.min()) < 0 or int(q.max()) >= N_CLASSES):
        raise ValueError(f"tokens must lie in [0, {N_CLASSES - 1}], got range [{int(q.min())}, {int(q.max())}]")


def mu_law_encode(x: ArrayT) -> ArrayT:
    """Waveform in [-1, 1] (any shape) -> mu-law class ids in [0, 255] (int64, same shape).

    f = sign(x) ln(1 + mu|x|) / ln(1 + mu), then f in [-1, 1] is cut into 256 equal bins by rounding.
    Silence (0) maps to class 128; -1 -> 0; +1 -> 255. Raises ValueError for non-float or non-finite `x`.
    """
    t, was_np = _to_torch(x)
    _check_waveform(t)
    t = t.to(torch.float64).clamp(-1.0, 1.0)
    f = torch.sign(t) * torch.log1p(MU * t.abs()) / math.log1p(MU)
    q = torch.floor((f + 1.0) / 2.0 * MU + 0.5).to(torch.int64)
    return q.numpy() if was_np else q


def mu_law_decode(q: ArrayT) -> ArrayT:
    """Mu-law class ids in [0, 255] -> waveform in [-1, 1] (float32, same shape). Inverse of `mu_law_encode`."""
    t, was_np = _to_torch(q)
    _check_tokens(t)
    f = t.to(torch.float64) * (2.0 / MU) - 1.0
    x = torch.sign(f) * torch.expm1(f.abs() * math.log1p(MU)) / MU
    x = x.to(torch.float32)
    return x.numpy() if was_np else x


def linear_encode(x: ArrayT) -> ArrayT:
    """Waveform in [-1, 1] -> 256 uniform bins (int64 in [0, 255]); -1 -> 0, +1 -> 255, error <= 1/255.

    Raises ValueError for non-float or non-finite `x`."""
    t, was_np = _to_torch(x)
    _check_waveform(t)
    t = t.to(torch.float64).clamp(-1.0, 1.0)
    q = torch.floor((t + 1.0) / 2.0 * MU + 0.5).to(torch.int64)
    return q.numpy() if was_np else q


def linear_decode(q: ArrayT) -> ArrayT:
    """Linear class ids in [0, 255] -> waveform in [-1, 1] (float32). Inverse of `linear_encode`."""
    t, was_np = _to_torch(q)
    _check_tokens(t)
    x = (t.to(torch.float64) * (2.0 / MU) - 1.0).to(torch.float32)
    return x.numpy() if was_np else x


def _codec(method: str) -> tuple:
    """(encoder, decoder) of a quantization ``method``; ValueError naming the choices otherwise."""
    codecs = {"mulaw": (mu_law_encode, mu_law_decode), "linear": (linear_encode, linear_decode)}
    if method not in codecs:
        raise ValueError(f"quantization method must be one of {QUANTIZERS}, got {method!r}")
    return codecs[method]


def encode(x: ArrayT, method: str = "mulaw") -> ArrayT:
    """Dispatch on `method` ("mulaw" | "linear")."""
    return _codec(method)[0](x)


def decode(q: ArrayT, method: str = "mulaw") -> ArrayT:
    """Dispatch on `method` ("mulaw" | "linear")."""
    return _codec(method)[1](q)


def silence_token(method: str = "mulaw") -> int:
    """Class id of a zero sample (128 for both schemes): the natural start token for unconditional sampling."""
    return int(encode(np.zeros(1), method)[0])
