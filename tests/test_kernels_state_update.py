"""Single-step selective state update (decoding): Triton kernel vs reference, and step-by-step
decoding vs the parallel scan (outputs and final state), real and complex, with groups.

On CPU a small subset runs under TRITON_INTERPRET=1 in a subprocess (see kernel_utils); the whole
table runs on a CUDA GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from kernel_utils import DTYPES, rel_rms, table_tests
from seeding import current_seed


@dataclass(frozen=True)
class StepCase:
    b: int
    d: int
    N: int
    g: int = 1
    cplx: bool = False
    dtype: str = "fp32"
    L: int = 8  # tokens fed one at a time for the scan-equivalence check

    @property
    def id(self) -> str:
        return f"B{self.b}-D{self.d}-N{self.N}-g{self.g}-{'cplx' if self.cplx else 'real'}-{self.dtype}-L{self.L}"


TABLE = [
    StepCase(1, 4, 1, 1, False, "fp32", 5),
    StepCase(2, 6, 4, 2, True, "fp32", 7),
    StepCase(2, 8, 16, 4, False, "bf16", 9),
    StepCase(3, 64, 16, 1, False, "fp16", 33),
    StepCase(2, 64, 64, 2, True, "bf16", 17),
    StepCase(1, 4096, 16, 1, False, "bf16", 4),
    StepCase(64, 256, 16, 1, True, "fp32", 4),
    StepCase(5, 100, 16, 5, False, "fp32", 11),
]
ALL_CASES = TABLE
INTERP_IDS = ["B1-D4-N1-g1-real-fp32-L5", "B2-D6-N4-g2-cplx-fp32-L7", "B2-D8-N16-g4-real-bf16-L9"]


def case_errors(c: StepCase, device: str) -> dict[str, float]:
    from mambaseq.kernels import selective_scan, selective_state_update, selective_state_update_ref

    seed = current_seed()
    gen = torch.Generator().manual_seed(seed)
    dt = DTYPES[c.dtype]
    st = torch.complex64 if c.cplx else torch.float32

    def rn(*shape, cplx=False):
        if cplx:
            return torch.complex(torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen))
        return torch.randn(*shape, generator=gen)

    b, d, N, L = c.b, c.d, c.N, c.L
    A = -torch.exp(0.5 * rn(d, N))
    if c.cplx:
        A = torch.complex(A, math.pi * rn(d, N))
    u, delta, z = rn(b, d, L).to(dt), (0.5 * rn(b, d, L) - 0.5).to(dt), rn(b, d, L).to(dt)
    Bm, Cm = rn(b, c.g, N, L, cplx=c.cplx).to(st), rn(b, c.g, N, L, cplx=c.cplx).to(st)
    D, bias, h0 = rn(d), 0.5 * rn(d), rn(b, d, N, cplx=c.cplx).to(st)
    u, delta, z, A, Bm, Cm, D, bias, h0 = (t.to(device) for t in (u, delta, z, A, Bm, Cm, D, bias, h0))
    errors = {}
    # one step from a random state: kernel vs reference
    s_ref, s_tri = h0.clone(), h0.clone()
    args = (u[..., 0], delta[..., 0], A, Bm[..., 0], Cm[..., 0], D, z[..., 0], bias, True)
    o_ref = selective_state_update_ref(s_ref, *args)
    o_tri = selective_state_update(s_tri, *args, backend="triton")
    errors["step_out"], errors["step_state"] = rel_rms(o_ref, o_tri), rel_rms(s_ref, s_tri)
    # decoding the whole sequence one token at a time == the parallel scan
    ref_out, ref_last = selective_scan(u.double(), delta.double(), A.to(torch.complex128 if c.cplx else torch.float64),
                                       Bm.to(torch.complex128 if c.cplx else torch.float64),
                                       Cm.to(torch.complex128 if c.cplx else torch.float64), D.double(), z.double(),
                                       bias.double(), True, True, initial_state=h0.to(torch.complex128 if c.cplx
                                                                                      else torch.float64),
                                       backend="reference")
    s = h0.clone()
    outs = [selective_state_update(s, u[..., t], delta[..., t], A, Bm[..., t], Cm[..., t], D, z[..., t], bias, True,
                                   backend="triton") for t in range(L)]
    errors["seq_out"], errors["seq_last"] = rel_rms(ref_out, torch.stack(outs, -1)), rel_rms(ref_last, s)
    errors["__seed__"] = seed
    return errors


interp_results, test_state_update_triton_interpreter, test_state_update_triton_gpu = table_tests(__file__, TABLE, INTERP_IDS, case_errors)


def test_state_update_reference_matches_scan():
    """CPU, reference backend: decoding one token at a time equals the scan (float64)."""
    from mambaseq.kernels import selective_scan, selective_state_update

    b, d, N, L = 2, 4, 3, 6
    u, delta, z = torch.randn(b, d, L).double(), torch.randn(b, d, L).double(), torch.randn(b, d, L).double()
    A = -torch.rand(d, N).double() - 0.1
    Bm, Cm = torch.randn(b, 2, N, L).double(), torch.randn(b, 2, N, L).double()
    D, bias = torch.randn(d).double(), torch.randn(d).double()
    out, last = selective_scan(u, delta, A, Bm, Cm, D, z, bias, True, True, backend="reference")
    h = torch.zeros(b, d, N, dtype=torch.float64)
    ys = [selective_state_update(h, u[..., t], delta[..., t], A, Bm[..., t], Cm[..., t], D, z[..., t], bias, True,
                                 backend="reference") for t in range(L)]
    assert rel_rms(out, torch.stack(ys, -1)) < 1e-12 and rel_rms(last, h) < 1e-12


def test_state_update_rejects_bad_input():
    from mambaseq.kernels import selective_state_update

    h = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="state"):
        selective_state_update(h.double().to(torch.complex128)[..., :2], torch.randn(2, 4), torch.randn(2, 4),
                               -torch.rand(4, 3), torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="B"):
        selective_state_update(h, torch.randn(2, 4), torch.randn(2, 4), -torch.rand(4, 3), torch.randn(2, 5),
                               torch.randn(2, 3))
