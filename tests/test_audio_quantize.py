"""Quantization: round-trip error bounds, edge values (+-1, silence, clipping), numpy/torch parity."""

import math

import numpy as np
import pytest
import torch

from mambaseq.audio import quantize as Q
from seeding import current_seed


def _mulaw_bound(x: torch.Tensor) -> torch.Tensor:
    # |x - dec(enc(x))| <= max |g'(f)| * half-bin; g'(f) = ln(1+mu)(1+mu|x|)/mu, half-bin = 1/mu in f,
    # and across half a bin 1+mu|x| grows by at most (1+mu)^(1/mu).
    mu = Q.MU
    return math.log1p(mu) / mu**2 * (1 + mu * x.abs()) * (1 + mu) ** (1 / mu) + 1e-6


@pytest.mark.parametrize("method", Q.QUANTIZERS)
def test_round_trip_error_bound(method):
    x = torch.rand(20_000, generator=torch.Generator().manual_seed(current_seed())) * 2 - 1
    q = Q.encode(x, method)
    assert q.dtype == torch.int64 and int(q.min()) >= 0 and int(q.max()) <= 255
    err = (Q.decode(q, method) - x).abs()
    bound = _mulaw_bound(x) if method == "mulaw" else torch.full_like(x, 1 / 255 + 1e-6)
    assert bool((err <= bound).all()), f"max excess {float((err - bound).max())}"


@pytest.mark.parametrize("method", Q.QUANTIZERS)
def test_tokens_are_fixed_points(method):
    q = torch.arange(256)
    assert torch.equal(Q.encode(Q.decode(q, method), method), q)


@pytest.mark.parametrize(
    "value,mulaw,linear",
    [(-1.0, 0, 0), (1.0, 255, 255), (0.0, 128, 128), (-3.0, 0, 0), (7.5, 255, 255)],
    ids=["minus_one", "plus_one", "silence", "clip_low", "clip_high"],
)
def test_edge_values(value, mulaw, linear):
    x = torch.tensor([value])
    assert int(Q.mu_law_encode(x)[0]) == mulaw
    assert int(Q.linear_encode(x)[0]) == linear
    if abs(value) == 1.0:  # the extremes decode exactly
        assert float(Q.mu_law_decode(Q.mu_law_encode(x))[0]) == pytest.approx(value, abs=1e-6)
        assert float(Q.linear_decode(Q.linear_encode(x))[0]) == pytest.approx(value, abs=1e-6)


def test_silence_decodes_near_zero_and_mulaw_is_finer_near_zero():
    assert abs(float(Q.mu_law_decode(torch.tensor([128]))[0])) < 1e-4  # within one mu-law bin of 0
    assert Q.silence_token("mulaw") == 128 and Q.silence_token("linear") == 128
    x = torch.linspace(-0.01, 0.01, 1001)
    e_mu = (Q.mu_law_decode(Q.mu_law_encode(x)) - x).abs().max()
    e_lin = (Q.linear_decode(Q.linear_encode(x)) - x).abs().max()
    assert e_mu < e_lin / 5


@pytest.mark.parametrize("method", Q.QUANTIZERS)
def test_numpy_and_torch_agree_and_shape_kept(method):
    x = np.random.default_rng(current_seed()).uniform(-1.2, 1.2, size=(3, 5, 7)).astype(np.float32)
    qn = Q.encode(x, method)
    assert isinstance(qn, np.ndarray) and qn.shape == x.shape
    assert np.array_equal(qn, Q.encode(torch.from_numpy(x), method).numpy())
    assert Q.decode(qn, method).dtype == np.float32


@pytest.mark.parametrize(
    "bad,match",
    [(torch.tensor([256]), "range"), (torch.tensor([-1]), "range"), (torch.tensor([0.5]), "integer")],
    ids=["too_big", "negative", "float_tokens"],
)
def test_decode_rejects_bad_tokens(bad, match):
    with pytest.raises(ValueError, match=match):
        Q.mu_law_decode(bad)


def test_unknown_method():
    with pytest.raises(ValueError, match="mulaw"):
        Q.encode(torch.zeros(3), "alaw")
