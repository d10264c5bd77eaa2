"""Triton kernels for the decoding step of a Mamba block (see ``mamba_step.py`` for the ops and oracles).

``_ssm_step_kernel``: everything between x_proj and out_proj in ONE launch per layer: the dt_proj
product (rank R, done per channel in registers), dt bias + softplus, the state update, the read-out, the
D skip and the SiLU(z) gate. B and C are read straight from x_proj's output row, A from A_log (and
A_imag), so no parameter conversion or slicing kernel runs per token.

``_conv_x_proj_kernel``: the conv-state roll + depthwise conv + SiLU and x_proj in ONE launch per layer:
each program convolves a block of channels and multiplies it by the matching columns of x_proj's weight,
writing one fp32 partial sum of x_proj's output per channel block; ``_ssm_step_kernel`` adds the partials
(and rounds them to the model's dtype, as x_proj's Linear would) when it reads B, C and dt's low-rank input.
This removes x_proj's GEMV launch (~4-5 us of latency per layer on an H200, whatever the batch).

``_add_rms_norm_kernel``: residual add + RMSNorm of one row per program (the pre-norm of the next block).

``_add_rms_norm_linear_kernel``: for a few rows (decoding at batch <= 4), residual add + RMSNorm + the next
block's in_proj GEMV in ONE launch: each program recomputes the rows' RMS (d_model values, from L2) and
multiplies the normed rows by its slice of the weight. A cuBLAS GEMV of this size is latency bound
(~6 us at d_model 768 x 3072 on an H200 for 4.7 MB of weights), and the separate norm costs another launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .selective_scan_triton_kernels import loop_bound
from .selective_state_update_triton import softplus, update_cplx, update_real, step_blocks


@triton.jit
def _xdbl(xd, idx, mask, P, sp, ref_ptr, PARTIAL: tl.constexpr, BP: tl.constexpr):
    """x_proj's output at columns ``idx`` of one row, as fp32: read directly, or the sum of P fp32 partials
    (stride ``sp`` apart) rounded to the dtype of ``ref_ptr`` (the model's), as the Linear's output is."""
    if PARTIAL:
        p = tl.arange(0, BP)
        v = tl.sum(tl.load(xd + p[:, None] * sp + idx[None, :], mask=(p < P)[:, None] & mask[None, :], other=0.0),
                   axis=0)
        v = v.to(ref_ptr.dtype.element_ty).to(tl.float32)
    else:
        v = tl.load(xd + idx, mask=mask, other=0.0).to(tl.float32)
    return v


@triton.jit
def _ssm_step_kernel(state_ptr, x_ptr, xdbl_ptr, z_ptr, dtw_ptr, dtb_ptr, alog_ptr, aimag_ptr, D_ptr, out_ptr,
                     d, N, R, sx, sxd, sz, P, sp,
                     HAS_Z: tl.constexpr, CPLX: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr,
                     BR: tl.constexpr, PARTIAL: tl.constexpr, BP: tl.constexpr):
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
    dtl = _xdbl(xd, r, r < R, P, sp, x_ptr, PARTIAL, BP)
    wt = tl.load(dtw_ptr + dch[:, None] * R + r[None, :], mask=dmask[:, None] & (r < R)[None, :],
                 other=0.0).to(tl.float32)
    dt = tl.sum(wt * dtl[None, :], axis=1) + tl.load(dtb_ptr + dch, mask=dmask, other=0.0).to(tl.float32)
    dt = softplus(dt)
    xv = tl.load(x_ptr + pb * sx + dch, mask=dmask, other=0.0).to(tl.float32)
    dtx = (dt * xv)[:, None]
    ar = -tl.exp(tl.load(alog_ptr + a_off, mask=m2, other=0.0).to(tl.float32))
    if CPLX:  # x_dbl = [dt_low | B_re | B_im | C_re | C_im]
        ai = tl.load(aimag_ptr + a_off, mask=m2, other=0.0).to(tl.float32)
        br = _xdbl(xd, R + n, nmask, P, sp, x_ptr, PARTIAL, BP)[None, :]
        bi = _xdbl(xd, R + N + n, nmask, P, sp, x_ptr, PARTIAL, BP)[None, :]
        cr = _xdbl(xd, R + 2 * N + n, nmask, P, sp, x_ptr, PARTIAL, BP)[None, :]
        ci = _xdbl(xd, R + 3 * N + n, nmask, P, sp, x_ptr, PARTIAL, BP)[None, :]
        hr = tl.load(state_ptr + 2 * st, mask=m2, other=0.0)
        hi = tl.load(state_ptr + 2 * st + 1, mask=m2, other=0.0)
        hr, hi, y = update_cplx(hr, hi, dt, dtx, ar, ai, br, bi, cr, ci)
        tl.debug_barrier()  # a tile smaller than the threads has replicas: all read the old state first
        tl.store(state_ptr + 2 * st, hr, mask=m2)
        tl.store(state_ptr + 2 * st + 1, hi, mask=m2)
    else:  # x_dbl = [dt_low | B | C]
        bv = _xdbl(xd, R + n, nmask, P, sp, x_ptr, PARTIAL, BP)[None, :]
        cv = _xdbl(xd, R + N + n, nmask, P, sp, x_ptr, PARTIAL, BP)[None, :]
        h = tl.load(state_ptr + st, mask=m2, other=0.0).to(tl.float32)  # an fp32 or half-precision state
        h, y = update_real(h, dt, dtx, ar, bv, cv)
        tl.debug_barrier()  # a tile smaller than the threads has replicas: all read the old state first
        tl.store(state_ptr + st, h.to(state_ptr.dtype.element_ty), mask=m2)
    y += tl.load(D_ptr + dch, mask=dmask, other=0.0).to(tl.float32) * xv
    if HAS_Z:
        zz = tl.load(z_ptr + pb * sz + dch, mask=dmask, other=0.0).to(tl.float32)
        y = y * zz * tl.sigmoid(zz)
    tl.store(out_ptr + row, y.to(out_ptr.dtype.element_ty), mask=dmask)


def _rows(t: Tensor) -> Tensor:
    """A (b, n) view whose last dimension is unit-stride (copy only if it is not)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def ssm_step_triton(state: Tensor, x: Tensor, x_dbl: Tensor, z: Tensor | None, dt_weight: Tensor,
                    dt_bias: Tensor, A_log: Tensor, D: Tensor, A_imag: Tensor | None, *,
                    blocks: tuple[int, int] | None = None) -> Tensor:
    """See ``mamba_step.ssm_step``; inputs already validated; x_dbl (b, E) or (P, b, E) fp32 partial sums.
    ``blocks``: (channels per program, warps) instead of ``step_blocks``' choice (bench/tune_step.py).
    Returns (b, d) in x's dtype."""
    if not state.is_contiguous():
        raise ValueError("state must be contiguous to be updated in place by the Triton step kernel")
    b, d, N = state.shape
    R = dt_weight.shape[1]
    cplx = A_imag is not None
    partial = x_dbl.dim() == 3
    x = _rows(x)
    x_dbl = x_dbl.contiguous() if partial else _rows(x_dbl)
    P, sp = (x_dbl.shape[0], x_dbl.stride(0)) if partial else (1, 0)
    sxd = x_dbl.stride(1) if partial else x_dbl.stride(0)
    z_ = _rows(z) if z is not None else x
    st = torch.view_as_real(state) if cplx else state
    out = torch.empty((b, d), device=x.device, dtype=x.dtype)
    BN = triton.next_power_of_2(N)
    if blocks is None and partial and b <= 2 and x.is_cuda:
        blocks = (16, 4)  # H200, d 1536, b 1 (bench/tune_step.py): 2.94 us vs 3.37 for step_blocks' (16, 1)
    BD, warps = blocks or step_blocks(b, d, BN, x.device)
    _ssm_step_kernel[(b, triton.cdiv(d, BD))](
        st, x, x_dbl, z_, dt_weight.contiguous(), dt_bias, A_log.contiguous(),
        A_imag.contiguous() if cplx else A_log, D, out, d, N, R, x.stride(0), sxd, z_.stride(0), P, sp,
        HAS_Z=z is not None, CPLX=cplx, BD=BD, BN=BN, BR=max(2, triton.next_power_of_2(R)), PARTIAL=partial,
        BP=triton.next_power_of_2(P), num_warps=warps)
    return out


@triton.jit
def _conv_x_proj_kernel(x_ptr, state_ptr, w_ptr, bias_ptr, xw_ptr, out_ptr, part_ptr, b, d, E, sx,
                        W: tl.constexpr, HAS_BIAS: tl.constexpr, BB: tl.constexpr, BD: tl.constexpr,
                        BE: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr):
    pid_d = tl.program_id(1)
    rows = tl.program_id(0) * BB + tl.arange(0, BB)
    dch = pid_d * BD + tl.arange(0, BD)
    rmask, dmask = rows < b, dch < d
    m2 = rmask[:, None] & dmask[None, :]
    rows = rows.to(tl.int64)
    xv = tl.load(x_ptr + rows[:, None] * sx + dch[None, :], mask=m2, other=0.0)
    srow = (rows[:, None] * d + dch[None, :]) * W
    acc = tl.zeros([BB, BD], tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + dch, mask=dmask, other=0.0).to(tl.float32)[None, :]
    # roll the conv state left by one, append x, convolve. A small tile is held by several threads at once
    # (replicas); every replica reads the old state before any replica writes the new one (the barrier).
    for k in tl.static_range(W):
        if k == W - 1:
            v = xv.to(state_ptr.dtype.element_ty)
        else:
            v = tl.load(state_ptr + srow + k + 1, mask=m2, other=0.0)
        acc += tl.load(w_ptr + dch * W + k, mask=dmask, other=0.0).to(tl.float32)[None, :] * v.to(tl.float32)
    tl.debug_barrier()
    for k in tl.static_range(W - 1):
        tl.store(state_ptr + srow + k, tl.load(state_ptr + srow + k + 1, mask=m2, other=0.0), mask=m2)
        tl.debug_barrier()
    tl.store(state_ptr + srow + W - 1, xv.to(state_ptr.dtype.element_ty), mask=m2)
    acc = acc * tl.sigmoid(acc)
    xc = tl.where(m2, acc, 0.0).to(out_ptr.dtype.element_ty)  # the conv output, as the model's dtype
    tl.store(out_ptr + rows[:, None] * d + dch[None, :], xc, mask=m2)
    e = tl.arange(0, BE)
    emask = e < E
    if DOT:  # (BB, BD) @ (BD, BE) on the tensor cores
        wt = tl.load(xw_ptr + e[None, :] * d + dch[:, None], mask=dmask[:, None] & emask[None, :], other=0.0)
        if PREC == "ieee":  # fp32 inputs, or the CPU interpreter (its half-precision dot is wrong, triton 3.9)
            part = tl.dot(xc.to(tl.float32), wt.to(tl.float32), input_precision="ieee")
        else:
            part = tl.dot(xc, wt.to(xc.dtype), input_precision=PREC)
    else:  # few rows: multiply and reduce in registers
        wt = tl.load(xw_ptr + e[:, None] * d + dch[None, :], mask=emask[:, None] & dmask[None, :], other=0.0)
        part = tl.sum(wt.to(tl.float32)[None, :, :] * xc.to(tl.float32)[:, None, :], axis=2)
    tl.store(part_ptr + (pid_d * b + rows)[:, None] * E + e[None, :], part, mask=rmask[:, None] & emask[None, :])


def conv_x_proj_step_triton(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None,
                            x_proj_weight: Tensor, *, blocks: tuple[int, int, int] | None = None
                            ) -> tuple[Tensor, Tensor]:
    """See ``mamba_step.conv_x_proj_step``; inputs already validated. Returns x_conv (b, d) in x's dtype and
    x_dbl as (P, b, E) fp32 partial sums over P channel blocks. ``blocks``: (rows, channels, warps) per
    program instead of the default (bench/tune_step.py); rows >= 16 use the tensor cores."""
    if not conv_state.is_contiguous():
        raise ValueError("conv_state must be contiguous to be updated in place by the Triton kernel")
    b, d = x.shape
    W, E = weight.shape[1], x_proj_weight.shape[0]
    if x.stride(1) != 1:
        x = x.contiguous()
    if blocks is None:  # H200, d 1536 (bench/tune_step.py): b 1 (1, 32, 4) 2.73 us; b 64 (16, 64, 4) 6.61 us
        blocks = (16, 64, 4) if b >= 16 else (1, 32, 4)  # tensor-core tiles need 16 rows
    BB, BD, warps = blocks
    dot = BB >= 16
    BD = min(BD, max(16, triton.next_power_of_2(d)))
    P = triton.cdiv(d, BD)
    out = torch.empty((b, d), device=x.device, dtype=x.dtype)
    part = torch.empty((P, b, E), device=x.device, dtype=torch.float32)
    w_ = weight.contiguous()
    _conv_x_proj_kernel[(triton.cdiv(b, BB), P)](
        x, conv_state, w_, bias if bias is not None else w_, x_proj_weight.contiguous(), out, part, b, d, E,
        x.stride(0), W=W, HAS_BIAS=bias is not None, BB=BB, BD=BD, BE=max(16, triton.next_power_of_2(E)), DOT=dot,
        PREC="ieee" if x.dtype == torch.float32 or not x.is_cuda else None, num_warps=warps)
    return out, part


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


@triton.jit
def _add_rms_norm_linear_kernel(x_ptr, res_ptr, nw_ptr, w_ptr, bias_ptr, out_ptr, res_out_ptr, b, K, Nout, sx, sr,
                                eps, HAS_RES: tl.constexpr, HAS_BIAS: tl.constexpr, BB: tl.constexpr,
                                BN: tl.constexpr, BK: tl.constexpr):
    pid = tl.program_id(0)
    rows = tl.arange(0, BB)
    rmask = rows < b
    rows = rows.to(tl.int64)
    cols = pid * BN + tl.arange(0, BN)
    cmask = cols < Nout
    # pass 1: the residual sum (written once, by program 0) and each row's sum of squares
    ss = tl.zeros([BB], tl.float32)
    for k0 in range(0, loop_bound(K), BK):
        k = k0 + tl.arange(0, BK)
        m = rmask[:, None] & (k < K)[None, :]
        s = tl.load(x_ptr + rows[:, None] * sx + k[None, :], mask=m, other=0.0).to(tl.float32)
        if HAS_RES:
            s += tl.load(res_ptr + rows[:, None] * sr + k[None, :], mask=m, other=0.0).to(tl.float32)
        s = s.to(res_out_ptr.dtype.element_ty)  # the residual stream is kept in the model's dtype
        if pid == 0:
            tl.store(res_out_ptr + rows[:, None] * K + k[None, :], s, mask=m)
        s = s.to(tl.float32)
        ss += tl.sum(s * s, axis=1)
    rstd = 1.0 / tl.sqrt(ss / K + eps)
    # pass 2: normed rows (rounded to the model's dtype, as the norm's output is) times the weight slice
    acc = tl.zeros([BB, BN], tl.float32)
    for k0 in range(0, loop_bound(K), BK):
        k = k0 + tl.arange(0, BK)
        kmask = k < K
        m = rmask[:, None] & kmask[None, :]
        s = tl.load(x_ptr + rows[:, None] * sx + k[None, :], mask=m, other=0.0).to(tl.float32)
        if HAS_RES:
            s += tl.load(res_ptr + rows[:, None] * sr + k[None, :], mask=m, other=0.0).to(tl.float32)
        s = s.to(res_out_ptr.dtype.element_ty).to(tl.float32)
        nw = tl.load(nw_ptr + k, mask=kmask, other=0.0).to(tl.float32)
        h = (s * rstd[:, None] * nw[None, :]).to(out_ptr.dtype.element_ty).to(tl.float32)
        w = tl.load(w_ptr + cols[:, None] * K + k[None, :], mask=cmask[:, None] & kmask[None, :],
                    other=0.0).to(tl.float32)
        acc += tl.sum(h[:, None, :] * w[None, :, :], axis=2)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + rows[:, None] * Nout + cols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=rmask[:, None] & cmask[None, :])


def add_rms_norm_linear_triton(x: Tensor, residual: Tensor | None, norm_weight: Tensor, eps: float,
                               weight: Tensor, bias: Tensor | None, *,
                               blocks: tuple[int, int, int] | None = None) -> tuple[Tensor, Tensor]:
    """See ``mamba_step.add_rms_norm_linear``; inputs already validated, b <= mamba_step.MAX_FUSED_NORM_ROWS.
    ``blocks``: (output columns, K chunk, warps) per program (bench/tune_step.py)."""
    b, K = x.shape
    Nout = weight.shape[0]
    x = _rows(x)
    r = _rows(residual) if residual is not None else x
    out = torch.empty((b, Nout), device=x.device, dtype=x.dtype)
    res = torch.empty((b, K), device=x.device, dtype=x.dtype)
    BB = max(1, triton.next_power_of_2(b))
    # H200, d_model 768 -> 3072, b 1 (bench/tune_step.py): (8, 512, 4) 4.63 us vs 4.86 for add_rms_norm + cuBLAS
    BN, BK, warps = blocks or (8, max(32, 512 // BB), 4)
    w_ = weight.contiguous()
    _add_rms_norm_linear_kernel[(triton.cdiv(Nout, BN),)](
        x, r, norm_weight, w_, bias if bias is not None else w_, out, res, b, K, Nout, x.stride(0), r.stride(0),
        float(eps), HAS_RES=residual is not None, HAS_BIAS=bias is not None, BB=BB, BN=BN,
        BK=min(BK, triton.next_power_of_2(K)), num_warps=warps)
    return out, res
