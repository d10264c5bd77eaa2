"""Fused Triton selective scan vs the PyTorch reference (float64): output, last state, every gradient.

One shape table with readable ids. On CPU a small subset runs under TRITON_INTERPRET=1 in one
subprocess (see kernel_utils); on a CUDA GPU the whole table runs, plus a long case (L=2^20) and a
case whose element offsets pass 2^31.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from kernel_utils import DTYPES, TOLERANCES, check_errors, rel_rms, table_tests
from seeding import current_seed

gpu = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@dataclass(frozen=True)
class ScanCase:
    b: int
    d: int
    L: int
    N: int
    g: int = 1
    cplx: bool = False
    dtype: str = "fp32"
    chunk: int | None = None  # force the time-chunk length (multi-chunk path) instead of the planner's
    plain: bool = False  # no z, D, delta_bias, softplus, initial_state

    @property
    def id(self) -> str:
        s = f"B{self.b}-D{self.d}-L{self.L}-N{self.N}-g{self.g}-{'cplx' if self.cplx else 'real'}-{self.dtype}"
        return s + (f"-chunk{self.chunk}" if self.chunk else "") + ("-plain" if self.plain else "")


TABLE = [
    ScanCase(1, 2, 1, 1, 1, False, "bf16"),  # L=1, N=1
    ScanCase(2, 4, 1, 16, 2, True, "fp32"),
    ScanCase(2, 4, 7, 4, 1, False, "fp32"),
    ScanCase(2, 4, 19, 4, 2, False, "fp32", chunk=8),
    ScanCase(2, 4, 19, 4, 2, True, "fp32", chunk=8),
    ScanCase(1, 4, 13, 16, 1, False, "fp16", plain=True),
    ScanCase(1, 2, 9, 4, 1, True, "bf16"),
    ScanCase(2, 4, 37, 16, 2, True, "bf16"),
    ScanCase(2, 8, 37, 4, 4, False, "fp16"),
    ScanCase(1, 6, 33, 16, 3, False, "fp32"),  # 2 channels per group
    ScanCase(1, 5, 100, 4, 5, False, "fp32"),  # 1 channel per group, odd dim
    ScanCase(2, 16, 129, 64, 1, False, "bf16"),
    ScanCase(2, 16, 129, 64, 2, True, "fp32"),
    ScanCase(2, 32, 515, 16, 1, False, "bf16"),
    ScanCase(2, 32, 515, 16, 2, True, "fp16"),
    ScanCase(3, 64, 1000, 16, 1, False, "fp32"),
    ScanCase(1, 64, 2053, 16, 1, True, "bf16"),
    ScanCase(2, 48, 300, 16, 1, False, "fp32", plain=True),
    ScanCase(2, 8, 300, 4, 1, True, "fp32", plain=True),
    ScanCase(2, 8, 333, 16, 2, False, "fp32", chunk=64),
    ScanCase(2, 8, 333, 16, 2, True, "bf16", chunk=40),
    ScanCase(1, 128, 4099, 16, 1, False, "bf16"),  # the GPU planner cuts this into time chunks
    ScanCase(1, 4, 70001, 16, 1, True, "fp32"),  # many planner chunks, complex
    ScanCase(4, 4096, 1100, 16, 1, False, "bf16"),  # H100 planner: forward chunked, backward from h0 alone
]
LONG = ScanCase(1, 4, 1 << 20, 16, 1, False, "fp32")
ALL_CASES = TABLE + [LONG]
# The CPU subset (interpreter): L=1, odd L, multi-chunk real + complex, groups, each dtype, no options.
INTERP_IDS = [
    "B1-D2-L1-N1-g1-real-bf16",
    "B2-D4-L1-N16-g2-cplx-fp32",  # L = 1 with batch > 1: the row stride of z is the batch stride
    "B2-D4-L19-N4-g2-real-fp32-chunk8",
    "B2-D4-L19-N4-g2-cplx-fp32-chunk8",
    "B1-D4-L13-N16-g1-real-fp16-plain",
    "B1-D2-L9-N4-g1-cplx-bf16",
]


def make_inputs(c: ScanCase, device: str, gen: torch.Generator) -> dict:
    """Fresh random inputs in the case's dtype (B/C complex64 for complex A), plus upstream grads."""
    dt = DTYPES[c.dtype]
    ct = torch.complex64 if c.cplx else None

    def rn(*shape, cplx=False):
        if cplx:
            return torch.complex(torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen))
        return torch.randn(*shape, generator=gen)

    b, d, L, N = c.b, c.d, c.L, c.N
    delta = (0.5 * rn(b, d, L) - 0.5) if not c.plain else (0.5 * torch.rand(b, d, L, generator=gen) + 0.05)
    A = -torch.exp(0.5 * rn(d, N))
    if c.cplx:
        A = torch.complex(A, math.pi * rn(d, N))
    x = {
        "u": rn(b, d, L).to(dt),
        "delta": delta.to(dt),
        "A": A,
        "B": rn(b, c.g, N, L, cplx=c.cplx).to(ct or dt),
        "C": rn(b, c.g, N, L, cplx=c.cplx).to(ct or dt),
        "D": None if c.plain else rn(d),
        "z": None if c.plain else rn(b, d, L).to(dt),
        "delta_bias": None if c.plain else 0.5 * rn(d),
        "initial_state": None if c.plain else rn(b, d, N, cplx=c.cplx),
    }
    # The upstream gradient of the output is rounded to the output's dtype here, so the kernel and the
    # float64 reference see the same values (otherwise a sum over few channels, e.g. dC at d=2, can
    # cancel and amplify a 2^-9 rounding into a >2% relative error).
    up = {"out": rn(b, d, L).to(dt), "last": rn(b, d, N, cplx=c.cplx)}
    mv = {k: (v.to(device) if v is not None else None) for k, v in x.items()}
    return mv, {k: v.to(device) for k, v in up.items()}


def widen(x: dict) -> dict:
    """float64 / complex128 copies of the same (already rounded) values, for the reference."""
    return {k: (None if v is None else v.to(torch.complex128 if v.is_complex() else torch.float64))
            for k, v in x.items()}


def run_scan(x: dict, up: dict, softplus: bool, backend: str, chunk: int | None = None) -> dict:
    """Outputs and gradients of every input under the shared upstream gradients ``up``."""
    from mambaseq.kernels import selective_scan

    leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items() if v is not None}
    a = {k: leaves.get(k) for k in x}
    if chunk is not None:
        from mambaseq.kernels.selective_scan_triton import selective_scan_triton

        out, last = selective_scan_triton(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"],
                                          a["delta_bias"], softplus, a["initial_state"], chunk_len=chunk)
    else:
        out, last = selective_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], a["delta_bias"],
                                   softplus, True, initial_state=a["initial_state"], backend=backend)
    g_out = up["out"].to(out.dtype)
    g_last = up["last"].to(last.dtype)
    grads = torch.autograd.grad([out, last], list(leaves.values()), [g_out, g_last])
    return {"out": out, "last": last, **{"d" + k: g for k, g in zip(leaves, grads)}}


def case_errors(c: ScanCase, device: str) -> dict[str, float]:
    """Relative RMS error of every output and gradient of the Triton scan against the reference."""
    seed = current_seed()
    gen = torch.Generator().manual_seed(seed)
    x, up = make_inputs(c, device, gen)
    softplus = not c.plain
    ref = run_scan(widen(x), widen(up), softplus, "reference")
    tri = run_scan(x, up, softplus, "triton", c.chunk)
    errors = {k: rel_rms(ref[k], tri[k]) for k in ref}
    errors["__seed__"] = seed
    return errors


interp_results, test_scan_triton_interpreter, test_scan_triton_gpu = table_tests(__file__, TABLE, INTERP_IDS,
                                                                                 case_errors)


def test_interpreter_subset_is_in_table():
    ids = {c.id for c in TABLE}
    assert set(INTERP_IDS) <= ids and len(ids) == len(TABLE)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_scan_triton_gpu_long():
    check_errors(LONG.id, case_errors(LONG, "cuda"), 1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_scan_triton_gpu_int32_overflow():
    """b*d*L > 2^31 elements (b*d*L*N ~ 9e9): the last channels sit past 2^31 in u/out/du.
    Channels are independent given B/C, so a few (first, middle, last) are checked against the
    reference run on those channels alone; dB/dC (sums over all channels) are not compared here."""
    from mambaseq.kernels import selective_scan

    b, d, L, N = 1, 8192, 278528, 4
    assert b * d * L > 2**31
    free, _ = torch.cuda.mem_get_info()
    if free < 60 * 2**30:
        pytest.skip(f"needs ~60 GiB of free GPU memory, {free / 2**30:.0f} GiB free")
    dev, bf = "cuda", torch.bfloat16
    gen = torch.Generator(device=dev).manual_seed(current_seed())
    u = torch.randn(b, d, L, device=dev, dtype=bf, generator=gen).requires_grad_()
    delta = (0.5 * torch.randn(b, d, L, device=dev, dtype=bf, generator=gen) - 0.5).requires_grad_()
    z = torch.randn(b, d, L, device=dev, dtype=bf, generator=gen).requires_grad_()
    A = (-torch.exp(0.5 * torch.randn(d, N, device=dev, generator=gen))).requires_grad_()
    Bm = torch.randn(b, N, L, device=dev, dtype=bf, generator=gen)
    Cm = torch.randn(b, N, L, device=dev, dtype=bf, generator=gen)
    D = torch.randn(d, device=dev, generator=gen).requires_grad_()
    bias = (0.5 * torch.randn(d, device=dev, generator=gen)).requires_grad_()
    h0 = torch.randn(b, d, N, device=dev, generator=gen).requires_grad_()
    out, last = selective_scan(u, delta, A, Bm, Cm, D, z, bias, True, True, initial_state=h0, backend="triton")
    g_out = torch.randn(b, d, L, device=dev, dtype=bf, generator=gen)
    g_last = torch.randn(b, d, N, device=dev, generator=gen)
    grads = torch.autograd.grad([out, last], [u, delta, z, A, D, bias, h0], [g_out, g_last])
    idx = torch.tensor([0, d // 2, d - 2, d - 1], device=dev)
    sub = {"u": u, "delta": delta, "z": z}
    xs = {k: v.detach()[:, idx].double().requires_grad_() for k, v in sub.items()}
    ps = {"A": A.detach()[idx].double(), "D": D.detach()[idx].double(), "bias": bias.detach()[idx].double(),
          "h0": h0.detach()[:, idx].double()}
    ps = {k: v.requires_grad_() for k, v in ps.items()}
    ro, rl = selective_scan(xs["u"], xs["delta"], ps["A"], Bm.double(), Cm.double(), ps["D"], xs["z"], ps["bias"],
                            True, True, initial_state=ps["h0"], backend="reference")
    rg = torch.autograd.grad([ro, rl], [xs["u"], xs["delta"], xs["z"], ps["A"], ps["D"], ps["bias"], ps["h0"]],
                             [g_out[:, idx].double(), g_last[:, idx].double()])
    errs = {"out": rel_rms(ro, out.detach()[:, idx]), "last": rel_rms(rl, last.detach()[:, idx])}
    names = ["du", "ddelta", "dz", "dA", "dD", "ddelta_bias", "dinitial_state"]
    sel = [lambda t: t[:, idx]] * 3 + [lambda t: t[idx]] * 3 + [lambda t: t[:, idx]]
    for nm, r, g, s in zip(names, rg, grads, sel):
        errs[nm] = rel_rms(r, s(g))
    check_errors("overflow-B1-D8192-L278528-N4-bf16", errs, TOLERANCES[torch.bfloat16])
