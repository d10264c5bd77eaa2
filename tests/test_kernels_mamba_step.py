"""Fused decoding-step kernels (kernels/mamba_step*.py) vs their PyTorch oracles.

``ssm_step`` (dt_proj + softplus + state update + D skip + SiLU(z) gate in one kernel) and
``add_rms_norm`` (residual add + RMSNorm), over a shape table with readable ids, real and complex,
strided inputs (views of in_proj's output, as the Mamba block passes them). Also: the oracle equals the
block's eager composition (dt_proj Linear, then ``selective_state_update``), and stepping it over a
sequence equals the parallel scan.

On CPU a small subset runs under TRITON_INTERPRET=1 in a subprocess (see kernel_utils); the whole table
runs on a CUDA GPU. Seeds derive from the case id.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import pytest
import torch

from kernel_utils import DTYPES, rel_rms, table_tests
from tolerances import CLOSE


@dataclass(frozen=True)
class StepCase:
    b: int
    d: int
    N: int
    R: int
    cplx: bool = False
    dtype: str = "fp32"
    gate: bool = True
    d_model: int = 16  # add_rms_norm width

    @property
    def id(self) -> str:
        return (f"B{self.b}-D{self.d}-N{self.N}-R{self.R}-{'cplx' if self.cplx else 'real'}-{self.dtype}"
                f"{'' if self.gate else '-nogate'}-M{self.d_model}")


TABLE = [
    StepCase(1, 4, 1, 1),
    StepCase(2, 6, 4, 3, True),
    StepCase(3, 8, 16, 2, False, "bf16", False, 5),
    StepCase(2, 64, 16, 4, True, "bf16"),
    StepCase(1, 1536, 16, 48, False, "bf16", True, 768),  # the 90.5M LM's layer at batch 1
    StepCase(64, 1536, 16, 48, False, "bf16", True, 768),  # ... and at batch 64
    StepCase(16, 256, 16, 8, True, "fp32", True, 128),  # SC09 SaShiMi blocks
    StepCase(5, 100, 16, 7, False, "fp16", True, 50),
]
ALL_CASES = TABLE
INTERP_IDS = ["B1-D4-N1-R1-real-fp32-M16", "B2-D6-N4-R3-cplx-fp32-M16", "B3-D8-N16-R2-real-bf16-nogate-M5"]


def _inputs(c: StepCase, device: str):
    gen = torch.Generator().manual_seed(zlib.crc32(c.id.encode()))
    dt = DTYPES[c.dtype]

    def rn(*shape):
        return torch.randn(*shape, generator=gen)

    b, d, N, R = c.b, c.d, c.N, c.R
    n_bc = (4 if c.cplx else 2) * N
    xz = rn(b, 2 * d).to(dt)  # x and z are strided views of one (b, 2d) row block, as in the block
    x, z = xz[:, :d], (xz[:, d:] if c.gate else None)
    x_dbl = (rn(b, R + n_bc) * 0.5).to(dt)
    dt_w, dt_b = (rn(d, R) / math.sqrt(R)).to(dt), (0.5 * rn(d) - 1.0).to(dt)
    A_log = (0.5 * rn(d, N)).to(dt)
    A_imag = (math.pi * rn(d, N)).to(dt) if c.cplx else None
    D = rn(d).to(dt)
    h0 = torch.complex(rn(b, d, N), rn(b, d, N)) if c.cplx else rn(b, d, N)
    move = (lambda t: None if t is None else t.to(device))
    return tuple(map(move, (h0, xz, x_dbl, dt_w, dt_b, A_log, A_imag, D))), (x, z)


def case_errors(c: StepCase, device: str) -> dict[str, float]:
    from mambaseq.kernels import add_rms_norm, add_rms_norm_ref, ssm_step, ssm_step_ref

    (h0, xz, x_dbl, dt_w, dt_b, A_log, A_imag, D), _ = _inputs(c, device)
    d = c.d
    x, z = xz[:, :d], (xz[:, d:] if c.gate else None)
    s_ref, s_tri = h0.clone(), h0.clone()
    o_ref = ssm_step_ref(s_ref, x, x_dbl, z, dt_w, dt_b, A_log, D, A_imag)
    o_tri = ssm_step(s_tri, x, x_dbl, z, dt_w, dt_b, A_log, D, A_imag, backend="triton")
    errors = {"out": rel_rms(o_ref, o_tri), "state": rel_rms(s_ref, s_tri)}
    # add + RMSNorm, with and without a residual, strided input rows
    gen = torch.Generator().manual_seed(zlib.crc32(c.id.encode()) + 1)
    dt = DTYPES[c.dtype]
    big = torch.randn(c.b, 2 * c.d_model, generator=gen).to(dt).to(device)
    xa, res = big[:, : c.d_model], torch.randn(c.b, c.d_model, generator=gen).to(dt).to(device)
    w = (1 + 0.1 * torch.randn(c.d_model, generator=gen)).to(dt).to(device)
    for tag, r in (("res", res), ("nores", None)):
        n_ref, r_ref = add_rms_norm_ref(xa, r, w, 1e-5)
        n_tri, r_tri = add_rms_norm(xa, r, w, 1e-5, backend="triton")
        errors[f"norm_{tag}"], errors[f"resid_{tag}"] = rel_rms(n_ref, n_tri), rel_rms(r_ref, r_tri)
    return errors


interp_results, test_step_kernels_interpreter, test_step_kernels_gpu = table_tests(__file__, TABLE, INTERP_IDS,
                                                                                case_errors)


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "cplx"])
def test_oracle_is_the_blocks_eager_step(cplx):
    """ssm_step_ref == dt_proj Linear + selective_state_update_ref (the block's previous step), exactly."""
    from mambaseq.kernels import selective_state_update_ref, ssm_step_ref

    c = StepCase(2, 6, 4, 3, cplx)
    (h0, xz, x_dbl, dt_w, dt_b, A_log, A_imag, D), (x, z) = _inputs(c, "cpu")
    R, N = c.R, c.N
    dt = x_dbl[:, :R] @ dt_w.T
    bc = x_dbl[:, R:]
    if cplx:
        B, C = torch.complex(bc[:, :N], bc[:, N:2 * N]), torch.complex(bc[:, 2 * N:3 * N], bc[:, 3 * N:])
        A = torch.complex(-A_log.exp(), A_imag)
    else:
        B, C, A = bc[:, :N], bc[:, N:], -A_log.exp()
    s1, s2 = h0.clone(), h0.clone()
    want = selective_state_update_ref(s1, x, dt, A, B, C, D, z, dt_b, True)
    got = ssm_step_ref(s2, x, x_dbl, z, dt_w, dt_b, A_log, D, A_imag)
    torch.testing.assert_close(got, want, **CLOSE["fp32_refused"])
    torch.testing.assert_close(s2, s1, **CLOSE["fp32_refused"])


def test_stepping_the_oracle_equals_the_scan():
    """Feeding a sequence through ssm_step_ref one token at a time == selective_scan (float64)."""
    from mambaseq.kernels import selective_scan, ssm_step_ref

    g = torch.Generator().manual_seed(11)
    b, d, N, R, L = 2, 5, 3, 2, 9
    u, z = torch.randn(b, d, L, generator=g).double(), torch.randn(b, d, L, generator=g).double()
    x_dbl = torch.randn(b, L, R + 2 * N, generator=g).double()
    dt_w, dt_b = torch.randn(d, R, generator=g).double(), torch.randn(d, generator=g).double()
    A_log, D = 0.3 * torch.randn(d, N, generator=g).double(), torch.randn(d, generator=g).double()
    delta = (x_dbl[..., :R] @ dt_w.T).transpose(1, 2)
    B, C = x_dbl[..., R:R + N].transpose(1, 2), x_dbl[..., R + N:].transpose(1, 2)
    out, last = selective_scan(u, delta, -A_log.exp(), B, C, D, z, dt_b, True, True, backend="reference")
    h = torch.zeros(b, d, N, dtype=torch.float64)
    ys = [ssm_step_ref(h, u[..., t], x_dbl[:, t], z[..., t], dt_w, dt_b, A_log, D) for t in range(L)]
    assert rel_rms(out, torch.stack(ys, -1)) < 1e-12 and rel_rms(last, h) < 1e-12


def test_ssm_step_rejects_bad_shapes():
    from mambaseq.kernels import add_rms_norm, ssm_step

    (h0, xz, x_dbl, dt_w, dt_b, A_log, A_imag, D), (x, z) = _inputs(StepCase(2, 6, 4, 3), "cpu")
    with pytest.raises(ValueError, match="x_dbl"):
        ssm_step(h0, x, x_dbl[:, :-1], z, dt_w, dt_b, A_log, D)
    with pytest.raises(ValueError, match="state must be complex64"):
        ssm_step(h0, x, x_dbl, z, dt_w, dt_b, A_log, D, A_log)
    with pytest.raises(ValueError, match="residual"):
        add_rms_norm(torch.zeros(2, 4), torch.zeros(3, 4), torch.ones(4))
