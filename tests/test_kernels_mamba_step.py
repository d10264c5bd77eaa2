"""Fused decoding-step kernels (kernels/mamba_step*.py) vs their PyTorch oracles.

``ssm_step`` (dt_proj + softplus + state update + D skip + SiLU(z) gate in one kernel) and
``conv_x_proj_step`` (conv-state roll + conv + SiLU + x_proj as partial sums, then consumed by ``ssm_step``) and
``add_rms_norm`` (residual add + RMSNorm) and ``add_rms_norm_linear`` (+ in_proj, one kernel up to batch 4), over a shape table with readable ids, real and complex,
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
    StepCase(17, 40, 4, 3, False, "fp32", True, 16),  # 17 rows: the tensor-core x_proj path, a partial row block
    StepCase(17, 40, 4, 3, False, "bf16", True, 48),  # ... in bf16 (the interpreter runs its dot in fp32)
]
ALL_CASES = TABLE
INTERP_IDS = ["B1-D4-N1-R1-real-fp32-M16", "B2-D6-N4-R3-cplx-fp32-M16", "B3-D8-N16-R2-real-bf16-nogate-M5",
              "B17-D40-N4-R3-real-fp32-M16", "B17-D40-N4-R3-real-bf16-M48"]


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
    from mambaseq.kernels import (add_rms_norm, add_rms_norm_linear, add_rms_norm_linear_ref, add_rms_norm_ref,
                                  ssm_step, ssm_step_ref)

    (h0, xz, x_dbl, dt_w, dt_b, A_log, A_imag, D), _ = _inputs(c, device)
    d = c.d
    x, z = xz[:, :d], (xz[:, d:] if c.gate else None)
    s_ref, s_tri = h0.clone(), h0.clone()
    o_ref = ssm_step_ref(s_ref, x, x_dbl, z, dt_w, dt_b, A_log, D, A_imag)
    o_tri = ssm_step(s_tri, x, x_dbl, z, dt_w, dt_b, A_log, D, A_imag, backend="triton")
    errors = {"out": rel_rms(o_ref, o_tri), "state": rel_rms(s_ref, s_tri)}
    if not c.cplx and c.dtype != "fp32":  # a state kept in the model's half precision (mamba-ssm's cache)
        h_ref, h_tri = h0.to(DTYPES[c.dtype]), h0.to(DTYPES[c.dtype])
        o_ref_h = ssm_step_ref(h_ref, x, x_dbl, z, dt_w, dt_b, A_log, D, A_imag)
        o_tri_h = ssm_step(h_tri, x, x_dbl, z, dt_w, dt_b, A_log, D, A_imag, backend="triton")
        assert h_tri.dtype == DTYPES[c.dtype]
        errors.update(out_half_state=rel_rms(o_ref_h, o_tri_h), half_state=rel_rms(h_ref.float(), h_tri.float()))
    errors.update(conv_x_proj_errors(c, device, x, z, h0, dt_w, dt_b, A_log, D, A_imag))
    # add + RMSNorm, with and without a residual, strided input rows
    gen = torch.Generator().manual_seed(zlib.crc32(c.id.encode()) + 1)
    dt = DTYPES[c.dtype]
    big = torch.randn(c.b, 2 * c.d_model, generator=gen).to(dt).to(device)
    xa, res = big[:, : c.d_model], torch.randn(c.b, c.d_model, generator=gen).to(dt).to(device)
    w = (1 + 0.1 * torch.randn(c.d_model, generator=gen)).to(dt).to(device)
    lin_w = (torch.randn(2 * c.d, c.d_model, generator=gen) / math.sqrt(c.d_model)).to(dt).to(device)
    lin_b = torch.randn(2 * c.d, generator=gen).to(dt).to(device) if c.gate else None
    for tag, r in (("res", res), ("nores", None)):
        n_ref, r_ref = add_rms_norm_ref(xa, r, w, 1e-5)
        n_tri, r_tri = add_rms_norm(xa, r, w, 1e-5, backend="triton")
        errors[f"norm_{tag}"], errors[f"resid_{tag}"] = rel_rms(n_ref, n_tri), rel_rms(r_ref, r_tri)
        # + in_proj (one kernel for batch <= 4)
        l_ref, r_ref = add_rms_norm_linear_ref(xa, r, w, 1e-5, lin_w, lin_b)
        l_tri, r_tri = add_rms_norm_linear(xa, r, w, 1e-5, lin_w, lin_b, backend="triton")
        errors[f"norm_linear_{tag}"], errors[f"norm_linear_resid_{tag}"] = rel_rms(l_ref, l_tri), rel_rms(r_ref, r_tri)
    return errors


def conv_x_proj_errors(c: StepCase, device: str, x, z, h0, dt_w, dt_b, A_log, D, A_imag) -> dict[str, float]:
    """conv_x_proj_step (Triton: partial sums) vs its oracle, then ssm_step fed each."""
    from mambaseq.kernels import conv_x_proj_step, conv_x_proj_step_ref, ssm_step, ssm_step_ref
    from mambaseq.kernels.mamba_step_triton import conv_x_proj_step_triton

    gen = torch.Generator().manual_seed(zlib.crc32(c.id.encode()) + 2)
    dt = DTYPES[c.dtype]
    E = c.R + (4 if c.cplx else 2) * c.N
    conv_w = (torch.randn(c.d, 4, generator=gen) / 2).to(dt).to(device)
    conv_b = torch.randn(c.d, generator=gen).to(dt).to(device)
    xw = (torch.randn(E, c.d, generator=gen) / math.sqrt(c.d)).to(dt).to(device)
    cs = torch.randn(c.b, c.d, 4, generator=gen).to(dt).to(device)
    cs_ref, cs_tri, cs_op = cs.clone(), cs.clone(), cs.clone()
    xc_ref, xd_ref = conv_x_proj_step_ref(x, cs_ref, conv_w, conv_b, xw)
    # the fused kernel itself (its tensor-core path from 16 rows), whatever the op would choose at this batch
    xc_tri, part = conv_x_proj_step_triton(x, cs_tri, conv_w, conv_b, xw)
    assert part.dim() == 3 and part.dtype == torch.float32 and part.shape[1:] == (c.b, E)
    s_ref, s_tri, s_op = h0.clone(), h0.clone(), h0.clone()
    o_ref = ssm_step_ref(s_ref, xc_ref, xd_ref, z, dt_w, dt_b, A_log, D, A_imag)
    o_tri = ssm_step(s_tri, xc_tri, part, z, dt_w, dt_b, A_log, D, A_imag, backend="triton")
    # the public op (fused up to MAX_FUSED_X_PROJ_ROWS rows, conv kernel + Linear above)
    xc_op, xd_op = conv_x_proj_step(x, cs_op, conv_w, conv_b, xw, backend="triton")
    o_op = ssm_step(s_op, xc_op, xd_op, z, dt_w, dt_b, A_log, D, A_imag, backend="triton")
    return {"conv_out": rel_rms(xc_ref, xc_tri), "conv_state": rel_rms(cs_ref, cs_tri),
            "x_proj": rel_rms(xd_ref.float(), part.sum(0)), "fused_out": rel_rms(o_ref, o_tri),
            "fused_state": rel_rms(s_ref, s_tri), "op_out": rel_rms(o_ref, o_op), "op_state": rel_rms(s_ref, s_op),
            "op_conv_state": rel_rms(cs_ref, cs_op)}


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


def test_partial_sums_oracle():
    """ssm_step_ref given x_proj's output as fp32 partial sums == given their sum rounded to x's dtype."""
    from mambaseq.kernels import ssm_step_ref

    c = StepCase(3, 8, 4, 2, False, "bf16")
    (h0, xz, x_dbl, dt_w, dt_b, A_log, A_imag, D), (x, z) = _inputs(c, "cpu")
    parts = torch.randn(5, *x_dbl.shape, generator=torch.Generator().manual_seed(3))
    s1, s2 = h0.clone(), h0.clone()
    got = ssm_step_ref(s1, x, parts, z, dt_w, dt_b, A_log, D)
    want = ssm_step_ref(s2, x, parts.sum(0).to(torch.bfloat16), z, dt_w, dt_b, A_log, D)
    torch.testing.assert_close(got, want, **CLOSE["exact"])
    torch.testing.assert_close(s1, s2, **CLOSE["exact"])


def test_conv_x_proj_oracle_is_conv_then_linear():
    """conv_x_proj_step on the reference backend == causal_conv1d_update_ref (SiLU) then x_proj's Linear."""
    from mambaseq.kernels import causal_conv1d_update_ref, conv_x_proj_step

    g = torch.Generator().manual_seed(5)
    x, cs = torch.randn(2, 6, generator=g), torch.randn(2, 6, 4, generator=g)
    w, b, xw = torch.randn(6, 4, generator=g), torch.randn(6, generator=g), torch.randn(7, 6, generator=g)
    cs2 = cs.clone()
    xc, xd = conv_x_proj_step(x, cs, w, b, xw, backend="reference")
    want = causal_conv1d_update_ref(x, cs2, w, b, "silu")
    torch.testing.assert_close(xc, want, **CLOSE["exact"])
    torch.testing.assert_close(xd, want @ xw.T, **CLOSE["fp32_refused"])
    torch.testing.assert_close(cs, cs2, **CLOSE["exact"])
    with pytest.raises(ValueError, match="x_proj_weight"):
        conv_x_proj_step(x, cs, w, b, xw[:, :5])


def test_ssm_step_rejects_bad_shapes():
    from mambaseq.kernels import add_rms_norm, ssm_step

    (h0, xz, x_dbl, dt_w, dt_b, A_log, A_imag, D), (x, z) = _inputs(StepCase(2, 6, 4, 3), "cpu")
    with pytest.raises(ValueError, match="x_dbl"):
        ssm_step(h0, x, x_dbl[:, :-1], z, dt_w, dt_b, A_log, D)
    with pytest.raises(ValueError, match="state must be complex64"):
        ssm_step(h0, x, x_dbl, z, dt_w, dt_b, A_log, D, A_log)
    with pytest.raises(ValueError, match="residual"):
        add_rms_norm(torch.zeros(2, 4), torch.zeros(3, 4), torch.ones(4))
