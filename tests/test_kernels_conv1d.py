"""Causal depthwise conv1d: Triton forward/backward and the decoding update vs the PyTorch reference.

On CPU a small subset runs under TRITON_INTERPRET=1 in a subprocess (see kernel_utils); the whole
table runs on a CUDA GPU. Every case also feeds the sequence one token at a time through
``causal_conv1d_update`` and checks it reproduces the full convolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from kernel_utils import DTYPES, rel_rms, table_tests
from seeding import current_seed


@dataclass(frozen=True)
class ConvCase:
    b: int
    d: int
    L: int
    width: int
    act: str | None = "silu"
    bias: bool = True
    dtype: str = "fp32"

    @property
    def id(self) -> str:
        return (f"B{self.b}-D{self.d}-L{self.L}-W{self.width}-{self.act or 'noact'}"
                f"-{'bias' if self.bias else 'nobias'}-{self.dtype}")


TABLE = [
    ConvCase(1, 3, 1, 2, None, False),  # L=1
    ConvCase(2, 5, 37, 4),
    ConvCase(2, 4, 300, 3, "silu", True, "bf16"),
    ConvCase(1, 6, 13, 4, "swish", False, "fp16"),
    ConvCase(2, 64, 1000, 4, "silu", True, "fp16"),
    ConvCase(3, 33, 513, 2, None, True, "bf16"),
    ConvCase(1, 128, 4099, 4, "silu", True, "fp32"),
    ConvCase(2, 96, 2048, 3, None, False, "fp32"),
    ConvCase(2, 7, 41, 5, "silu", True, "fp32"),  # widths above mamba-ssm's 4 (d_conv 5..8)
    ConvCase(1, 9, 19, 8, None, False, "bf16"),
]
ALL_CASES = TABLE
INTERP_IDS = ["B1-D3-L1-W2-noact-nobias-fp32", "B2-D5-L37-W4-silu-bias-fp32", "B1-D6-L13-W4-swish-nobias-fp16",
              "B2-D7-L41-W5-silu-bias-fp32", "B1-D9-L19-W8-noact-nobias-bf16"]


def case_errors(c: ConvCase, device: str) -> dict[str, float]:
    from mambaseq.kernels import causal_conv1d, causal_conv1d_update

    seed = current_seed()
    gen = torch.Generator().manual_seed(seed)
    dt = DTYPES[c.dtype]
    x = torch.randn(c.b, c.d, c.L, generator=gen).to(dt).to(device)
    w = (torch.randn(c.d, c.width, generator=gen) / c.width**0.5).to(device)
    bias = torch.randn(c.d, generator=gen).to(device) if c.bias else None
    g = torch.randn(c.b, c.d, c.L, generator=gen).to(dt).to(device)  # rounded: both sides see the same values
    res = {}
    for name, backend, wide in [("ref", "reference", True), ("tri", "triton", False)]:
        leaves = [t.detach().clone().double() if wide else t.detach().clone() for t in (x, w, bias) if t is not None]
        leaves = [t.requires_grad_() for t in leaves]
        out = causal_conv1d(leaves[0], leaves[1], leaves[2] if c.bias else None, c.act, backend=backend)
        grads = torch.autograd.grad(out, leaves, g.to(out.dtype))
        res[name] = {"out": out, "dx": grads[0], "dweight": grads[1], **({"dbias": grads[2]} if c.bias else {})}
    errors = {k: rel_rms(res["ref"][k], res["tri"][k]) for k in res["ref"]}
    # decoding: one token at a time from a zero state reproduces the parallel convolution
    state = torch.zeros(c.b, c.d, c.width, device=device, dtype=dt)
    steps = [causal_conv1d_update(x[:, :, t], state, w, bias, c.act, backend="triton") for t in range(c.L)]
    errors["step_out"] = rel_rms(res["ref"]["out"], torch.stack(steps, -1))
    tail = x[:, :, max(0, c.L - c.width):]
    expect = torch.cat([torch.zeros(c.b, c.d, c.width - tail.shape[-1], device=device, dtype=dt), tail], -1)
    errors["step_state"] = rel_rms(expect, state)
    errors["__seed__"] = seed
    return errors


interp_results, test_conv1d_triton_interpreter, test_conv1d_triton_gpu = table_tests(__file__, TABLE, INTERP_IDS, case_errors)


def test_conv1d_reference_matches_loop():
    """The naive oracle against an explicit loop over taps (float64)."""
    from mambaseq.kernels import causal_conv1d_naive

    x, w, bias = torch.randn(2, 3, 11, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64), torch.randn(3)
    out = causal_conv1d_naive(x, w, bias.double(), "silu")
    xp = torch.nn.functional.pad(x, (3, 0))
    loop = sum(w[:, k, None] * xp[:, :, k:k + 11] for k in range(4)) + bias.double()[:, None]
    assert rel_rms(torch.nn.functional.silu(loop), out) < 1e-12


@pytest.mark.parametrize("L", [1, 2, 3, 17, 256])
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("act", [None, "silu"])
@pytest.mark.parametrize("layout", ["bdl", "bld"])
def test_conv1d_reference_matches_naive(L, width, act, layout):
    """The CPU path (hand-written backward) against plain autograd through the oracle: output and the
    gradients of x, weight and bias, in float64, for x laid out (b, d, L) or as a view of (b, L, d)."""
    from mambaseq.kernels import causal_conv1d_naive, causal_conv1d_ref

    g = torch.Generator().manual_seed(L * 100 + width)
    d = 5
    x0 = torch.randn(2, d, L, generator=g, dtype=torch.float64)
    if layout == "bld":
        x0 = x0.transpose(1, 2).contiguous().transpose(1, 2)
    w0 = torch.randn(d, width, generator=g, dtype=torch.float64)
    b0 = torch.randn(d, generator=g, dtype=torch.float64)
    up = torch.randn(2, d, L, generator=g, dtype=torch.float64)
    res = []
    for fn in (causal_conv1d_naive, causal_conv1d_ref):
        x, w, b = (t.clone().requires_grad_() for t in (x0, w0, b0))
        out = fn(x, w, b, act)
        out.backward(up)
        res.append([out, x.grad, w.grad, b.grad])
    for name, r, f in zip(["out", "dx", "dw", "dbias"], *res):
        assert rel_rms(r, f) < 1e-12, name


def test_conv1d_reference_gradcheck():
    from mambaseq.kernels import causal_conv1d_ref

    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in [(2, 3, 7), (3, 4), (3,)])
    assert torch.autograd.gradcheck(lambda x, w, b: causal_conv1d_ref(x, w, b, "silu"), (x, w, b))


def test_conv1d_reference_low_precision_grads_keep_dtypes():
    from mambaseq.kernels import causal_conv1d_ref

    x = torch.randn(2, 4, 9).bfloat16().requires_grad_()
    w, b = torch.randn(4, 3, requires_grad=True), torch.randn(4, requires_grad=True)
    out = causal_conv1d_ref(x, w, b, "silu")
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.float32 and b.grad.dtype == torch.float32


@pytest.mark.parametrize("bad", ["width", "bias", "act", "state"])
def test_conv1d_rejects_bad_input(bad):
    from mambaseq.kernels import causal_conv1d, causal_conv1d_update

    x, w = torch.randn(2, 3, 5), torch.randn(3, 4)
    with pytest.raises(ValueError):
        if bad == "width":
            causal_conv1d(x, torch.randn(3, 9))  # widths 2..8
        elif bad == "bias":
            causal_conv1d(x, w, torch.randn(4))
        elif bad == "act":
            causal_conv1d(x, w, activation="relu")
        else:
            causal_conv1d_update(x[:, :, 0], torch.zeros(2, 3, 3), w)
