"""Triton kernels for the decoding step of a Mamba block (see ``mamba_step.py`` for the ops and oracles).

``_ssm_step_kernel``: everything between x_proj and out_proj in ONE launch per layer: the dt_proj
product (rank R, done per channel in registers), dt bias + softplus, the state update, the read-out, the
D skip and the SiLU(z) gate. B and C are read straight from x_proj's output row, A from A_log (and
A_imag), so no parameter conversion or slicing kernel runs per token.

``_add_rms_norm_kernel``: residual add + RMSNorm of one row per program (the pre-norm of the next block).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .selective_state_update_triton import softplus, update_cplx, update_real, step_blocks


@triton.jit
def _ssm_step_kernel(state_ptr, x_ptr, xdbl_ptr, z_ptr, dtw_ptr, dtb_ptr, alog_ptr, aimag_ptr, D_ptr, out_ptr,
                     d, N, R, sx, sxd, sz,
                     HAS_Z: tl.constexpr, CPLX: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
                     BR: tl.constexpr):
    pb = tl.program_id(0).to(tl.int64)
    dch = tl.program_id(1) * BD + tl.arange(0, BD)
    n = tl.arange(0, BN)
    r = tl.arange(0, BR)
    dmask, nmask = dch < d, n < N
    m2 = dmask[:, None] & nmask[None, :]
    row = pb * d + dch
    st = (row * N)[:, None] + n[None, :]
    a_off = dch[:, None] * N + n[None, :]
    xd = xdbl_ptr + pb * sxd
    # dt = softplus(W_dt @ x_dbl[:R] + b_dt), the rank-R product per channel
    dtl = tl.load(xd + r, mask=r < R, other=0.0).to(tl.float32)
    wt = tl.load(dtw_ptr + dch[:, None] * R + r[None, :], mask=dmask[:, None] & (r < R)[None, :],
                 other=0.0).to(tl.float32)
    dt = tl.sum(wt * dtl[None, :], axis=1) + tl.load(dtb_ptr + dch, mask=dmask, other=0.0).to(tl.float32)
    dt = softplus(dt)
    xv = tl.load(x_ptr + pb * sx + dch, mask=dmask, other=0.0).to(tl.float32)
    dtx = (dt * xv)[:, None]
    ar = -tl.exp(tl.load(alog_ptr + a_off, mask=m2, other=0.0).to(tl.float32))
    if CPLX:  # x_dbl = [dt_low | B_re | B_im | C_re | C_im]
        ai = tl.load(aimag_ptr + a_off, mask=m2, other=0.0).to(tl.float32)
        br = tl.load(xd + R + n, mask=nmask, other=0.0).to(tl.float32)[None, :]
        bi = tl.load(xd + R + N + n, mask=nmask, other=0.0).to(tl.float32)[None, :]
        cr = tl.load(xd + R + 2 * N + n, mask=nmask, other=0.0).to(tl.float32)[None, :]
        ci = tl.load(xd + R + 3 * N + n, mask=nmask, other=0.0).to(tl.float32)[None, :]
        hr = tl.load(state_ptr + 2 * st, mask=m2, other=0.0)
        hi = tl.load(state_ptr + 2 * st + 1, mask=m2, other=0.0)
        hr, hi, y = update_cplx(hr, hi, dt, dtx, ar, ai, br, bi, cr, ci)
        tl.store(state_ptr + 2 * st, hr, mask=m2)
        tl.store(state_ptr + 2 * st + 1, hi, mask=m2)
    else:  # x_dbl = [dt_low | B | C]
        bv = tl.load(xd + R + n, mask=nmask, other=0.0).to(tl.float32)[None, :]
        cv = tl.load(xd + R + N + n, mask=nmask, other=0.0).to(tl.float32)[None, :]
        h = tl.load(state_ptr + st, mask=m2, other=0.0)
        h, y = update_real(h, dt, dtx, ar, bv, cv)
        tl.store(state_ptr + st, h, mask=m2)
    y += tl.load(D_ptr + dch, mask=dmask, other=0.0).to(tl.float32) * xv
    if HAS_Z:
        zz = tl.load(z_ptr + pb * sz + dch, mask=dmask, other=0.0).to(tl.float32)
        y = y * zz * tl.sigmoid(zz)
    tl.store(out_ptr + row, y.to(out_ptr.dtype.element_ty), mask=dmask)


def _rows(t: Tensor) -> Tensor:
    """A (b, n) view whose last dimension is unit-stride (copy only if it is not)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def ssm_step_triton(state: Tensor, x: Tensor, x_dbl: Tensor, z: Tensor | None, dt_weight: Tensor,
                    dt_bias: Tensor, A_log: Tensor, D: Tensor, A_imag: Tensor | None) -> Tensor:
    """See ``mamba_step.ssm_step``; inputs already validated. Returns (b, d) in x's dtype."""
    if not state.is_contiguous():
        raise ValueError("state must be contiguous to be updated in place by the Triton step kernel")
    b, d, N = state.shape
    R = dt_weight.shape[1]
    cplx = A_imag is not None
    x, x_dbl = _rows(x), _rows(x_dbl)
    z_ = _rows(z) if z is not None else x
    st = torch.view_as_real(state) if cplx else state
    out = torch.empty((b, d), device=x.device, dtype=x.dtype)
    BN = triton.next_power_of_2(N)
    BD, warps = step_blocks(b, d, BN, x.device)
    _ssm_step_kernel[(b, triton.cdiv(d, BD))](
        st, x, x_dbl, z_, dt_weight.contiguous(), dt_bias, A_log.contiguous(),
        A_imag.contiguous() if cplx else A_log, D, out, d, N, R, x.stride(0), x_dbl.stride(0), z_.stride(0),
        HAS_Z=z is not None, CPLX=cplx, BD=BD, BN=BN, BR=max(2, triton.next_power_of_2(R)), num_warps=warps)
    return out


@triton.jit
def _add_rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, d, sx, sr, eps,
                         HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
    pb = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, BLOCK)
    m = c < d
    s = tl.load(x_ptr + pb * sx + c, mask=m, other=0.0).to(tl.float32)
    if HAS_RES:
        s += tl.load(res_ptr + pb * sr + c, mask=m, other=0.0).to(tl.float32)
    s = s.to(res_out_ptr.dtype.element_ty)  # the residual stream is kept in the model's dtype
    tl.store(res_out_ptr + pb * d + c, s, mask=m)
    s = s.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(s * s, axis=0) / d + eps)
    y = s * rstd * tl.load(w_ptr + c, mask=m, other=0.0).to(tl.float32)
    tl.store(out_ptr + pb * d + c, y.to(out_ptr.dtype.element_ty), mask=m)


def add_rms_norm_triton(x: Tensor, residual: Tensor | None, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """See ``mamba_step.add_rms_norm``; inputs already validated."""
    b, d = x.shape
    x = _rows(x)
    r = _rows(residual) if residual is not None else x
    out = torch.empty((b, d), device=x.device, dtype=x.dtype)
    res = torch.empty((b, d), device=x.device, dtype=x.dtype)
    block = triton.next_power_of_2(d)
    _add_rms_norm_kernel[(b,)](x, r, weight, out, res, d, x.stride(0), r.stride(0), float(eps),
                               HAS_RES=residual is not None, BLOCK=block,
                               num_warps=max(1, min(8, block // 256)))
    return out, res
