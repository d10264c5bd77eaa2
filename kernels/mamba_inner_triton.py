"""Fused Mamba block after in_proj, on the GPU (Triton): the autograd Function behind ``mamba_inner``.

Everything stays in the block's own time-major layout, (batch, L, channels) with channels contiguous:
the in_proj output xz (b, L, 2 d_inner) is read in place (x = its first half, z = its second half, rows
2 d_inner apart), the conv output, delta and the gated scan output are (b, L, d_inner) tensors that feed
the projections directly, and the gradient of xz is written in place as well (dx by the conv backward,
dz by the scan backward). No transpose or contiguous copy runs anywhere in forward or backward.

Saved for the backward (per block): xz and x_dbl (b, L, dt_rank + 2N [4N complex]) plus the scan's chunk
start states. The backward RECOMPUTES the conv output (one pass over x) and delta (a rank-dt_rank product),
and the scan backward recomputes the gated output y * silu(z) for out_proj's weight gradient, so neither
the conv output, delta, the scan output nor the gated output is kept between forward and backward.
Design reference: Gu & Dao 2023, "Mamba", Sec. 3.3.2 (kernel fusion, recomputation of intermediates).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from .backend import triton_interpret
from .selective_scan_triton import scan_backward, scan_forward


# ----------------------------------------------------------------------------- time-major causal conv
@triton.jit
def _pre_tm(x_ptr, w_ptr, bias_ptr, rowx, t, tmask, c, cmask, sx, W: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Conv pre-activation at times t (BL,) x channels c (BD,): bias + sum_k w[c, k] x[t - (W-1) + k]."""
    acc = tl.zeros([t.shape[0], c.shape[0]], tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=cmask, other=0.0).to(tl.float32)[None, :]
    for k in tl.static_range(W):
        p = t - (W - 1) + k
        pm = tmask & (p >= 0)
        xk = tl.load(x_ptr + (rowx + p.to(tl.int64) * sx)[:, None] + c[None, :],
                     mask=pm[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        wk = tl.load(w_ptr + c * W + k, mask=cmask, other=0.0).to(tl.float32)
        acc += xk * wk[None, :]
    return acc


@triton.jit
def _conv_tm_fwd_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, L, d, sx,
                        W: tl.constexpr, HAS_BIAS: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr):
    """out[b, t, c] = silu(pre[b, t, c]); x rows sx elements apart, out (b, L, d) contiguous."""
    nlb = tl.cdiv(L, BL)
    pid_b = tl.program_id(0) // nlb
    t = (tl.program_id(0) % nlb) * BL + tl.arange(0, BL)
    c = tl.program_id(1) * BD + tl.arange(0, BD)
    tmask = t < L
    cmask = c < d
    rowx = pid_b.to(tl.int64) * L * sx
    y = _pre_tm(x_ptr, w_ptr, bias_ptr, rowx, t, tmask, c, cmask, sx, W, HAS_BIAS)
    y = y * tl.sigmoid(y)
    o = (pid_b.to(tl.int64) * L + t)[:, None] * d + c[None, :]
    tl.store(out_ptr + o, y.to(out_ptr.dtype.element_ty), mask=tmask[:, None] & cmask[None, :])


@triton.jit
def _gpre_tm(x_ptr, w_ptr, bias_ptr, g1_ptr, g2_ptr, rowx, t, c, cmask, L, d, sx, pid_b,
             W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_G2: tl.constexpr):
    """dL/dpre at times t (0 outside [0, L)): (g1 + g2) * silu'(pre), pre recomputed from x."""
    tm = (t >= 0) & (t < L)
    m = tm[:, None] & cmask[None, :]
    o = (pid_b.to(tl.int64) * L + t)[:, None] * d + c[None, :]
    g = tl.load(g1_ptr + o, mask=m, other=0.0).to(tl.float32)
    if HAS_G2:
        g += tl.load(g2_ptr + o, mask=m, other=0.0).to(tl.float32)
    pre = _pre_tm(x_ptr, w_ptr, bias_ptr, rowx, t, tm, c, cmask, sx, W, HAS_BIAS)
    s = tl.sigmoid(pre)
    return g * s * (1.0 + pre * (1.0 - s))


@triton.jit
def _conv_tm_bwd_kernel(x_ptr, w_ptr, bias_ptr, g1_ptr, g2_ptr, dx_ptr, dw_ptr, db_ptr, L, d, sx, NLB,
                        W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_G2: tl.constexpr,
                        BL: tl.constexpr, BD: tl.constexpr):
    """dx[t] = sum_k w[k] gpre[t + W-1-k] (into rows sx apart); dw, dbias as one fp32 partial per
    (batch, time block), summed on the host (deterministic, no atomics)."""
    pid_b = tl.program_id(0) // NLB
    lb = tl.program_id(0) % NLB
    t = lb * BL + tl.arange(0, BL)
    c = tl.program_id(1) * BD + tl.arange(0, BD)
    cmask = c < d
    rowx = pid_b.to(tl.int64) * L * sx
    part = ((pid_b * NLB + lb) * d + c).to(tl.int64)  # (batch, time block, d) partial rows
    g0 = _gpre_tm(x_ptr, w_ptr, bias_ptr, g1_ptr, g2_ptr, rowx, t, c, cmask, L, d, sx, pid_b, W, HAS_BIAS, HAS_G2)
    if HAS_BIAS:
        tl.store(db_ptr + part, tl.sum(g0, axis=0), mask=cmask)
    dx = tl.zeros([BL, BD], tl.float32)
    for k in tl.static_range(W):
        p = t - (W - 1) + k
        xk = tl.load(x_ptr + (rowx + p.to(tl.int64) * sx)[:, None] + c[None, :],
                     mask=((p >= 0) & (p < L))[:, None] & cmask[None, :], other=0.0).to(tl.float32)
        tl.store(dw_ptr + part * W + k, tl.sum(g0 * xk, axis=0), mask=cmask)
        wk = tl.load(w_ptr + c * W + k, mask=cmask, other=0.0).to(tl.float32)
        if k == W - 1:
            gk = g0
        else:
            gk = _gpre_tm(x_ptr, w_ptr, bias_ptr, g1_ptr, g2_ptr, rowx, t + (W - 1 - k), c, cmask, L, d, sx,
                          pid_b, W, HAS_BIAS, HAS_G2)
        dx += gk * wk[None, :]
    tl.store(dx_ptr + (rowx + t.to(tl.int64) * sx)[:, None] + c[None, :], dx.to(dx_ptr.dtype.element_ty),
             mask=(t < L)[:, None] & cmask[None, :])


# (time rows, channels, warps) of a conv program on the GPU, forward and backward; bench_e2e.py's ``conv``
# command sweeps the backward's.
CONV_TUNE = {"fwd": (32, 128, 4), "bwd": (16, 64, 2)}  # bwd: 0.35 vs 0.44 ms for (32, 128, 4), H200 sweep


def _conv_blocks(L: int, d: int, which: str) -> tuple[int, int, int]:
    """(BL, BD, warps): 128-channel rows (256 B of bf16) coalesced; few, wide programs in the interpreter."""
    if triton_interpret():
        return min(64, triton.next_power_of_2(L)), min(64, triton.next_power_of_2(d)), 4
    bl, bd, nw = CONV_TUNE[which]
    return bl, min(bd, triton.next_power_of_2(d)), nw


def conv_tm_forward(x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """silu(causal depthwise conv) over time-major x (b, L, d) (rows may be strided, channels contiguous);
    w (d, W) , bias (d,) or None. Returns (b, L, d) contiguous in x's dtype."""
    b, L, d = x.shape
    W = w.shape[1]
    out = torch.empty((b, L, d), device=x.device, dtype=x.dtype)
    BL, BD, nw = _conv_blocks(L, d, "fwd")
    _conv_tm_fwd_kernel[(b * triton.cdiv(L, BL), triton.cdiv(d, BD))](
        x, w, bias if bias is not None else w, out, L, d, x.stride(1),
        W=W, HAS_BIAS=bias is not None, BL=BL, BD=BD, num_warps=nw)
    return out


def conv_tm_backward(x: Tensor, w: Tensor, bias: Tensor | None, g1: Tensor, g2: Tensor | None,
                     dx: Tensor) -> tuple[Tensor, Tensor | None]:
    """Backward of ``conv_tm_forward`` for the upstream gradient g1 + g2 (both (b, L, d) contiguous; g2 may be
    None): writes dL/dx into ``dx`` (same strides as x) and returns (dw (d, W) float32, dbias (d,) or None)."""
    b, L, d = x.shape
    W = w.shape[1]
    BL, BD, nw = _conv_blocks(L, d, "bwd")
    nlb = triton.cdiv(L, BL)
    dwp = torch.empty((b, nlb, d, W), device=x.device, dtype=torch.float32)
    dbp = torch.empty((b, nlb, d), device=x.device, dtype=torch.float32) if bias is not None else None
    _conv_tm_bwd_kernel[(b * nlb, triton.cdiv(d, BD))](
        x, w, bias if bias is not None else w, g1, g2 if g2 is not None else g1, dx, dwp,
        dbp if dbp is not None else dwp, L, d, x.stride(1), nlb,
        W=W, HAS_BIAS=bias is not None, HAS_G2=g2 is not None, BL=BL, BD=BD, num_warps=nw)
    return dwp.sum((0, 1)), (dbp.sum((0, 1)) if dbp is not None else None)


# ----------------------------------------------------------------------------- the block
def _bc_from_xdbl(x_dbl: Tensor, R: int, N: int, cplx: bool) -> tuple[Tensor, Tensor]:
    """x_proj output (b, L, R + 2N | R + 4N) -> B_, C_ in the scan kernels' layout (b, 1, L, N[, 2]) float32
    (complex: (re, im) interleaved; x_dbl holds [dt | B_re | B_im | C_re | C_im]). Small: no d axis."""
    if cplx:
        Br, Bi, Cr, Ci = x_dbl[..., R:].float().split(N, dim=-1)
        return torch.stack([Br, Bi], -1).unsqueeze(1), torch.stack([Cr, Ci], -1).unsqueeze(1)
    B, C = x_dbl[..., R:].float().split(N, dim=-1)
    return B.contiguous().unsqueeze(1), C.contiguous().unsqueeze(1)


class MambaInnerTriton(torch.autograd.Function):
    """xz (b, L, 2 d_inner) -> out (b, L, d_model); arguments as ``mamba_inner`` after its dtype casts."""

    @staticmethod
    def forward(ctx, xz, conv_w, conv_b, xw, dtw, dt_bias, A, D, ow, ob, chunk_len):
        di = xz.shape[-1] // 2
        R = dtw.shape[1]
        N = A.shape[1]
        cplx = A.is_complex()
        with torch.autocast(xz.device.type, enabled=False):
            u = conv_tm_forward(xz[..., :di], conv_w, conv_b)  # (b, L, di)
            x_dbl = F.linear(u, xw)  # (b, L, R + n_bc)
            delta = F.linear(x_dbl[..., :R], dtw)  # (b, L, di); bias + softplus happen in the scan
            B_, C_ = _bc_from_xdbl(x_dbl, R, N, cplx)
            y, _, saved = scan_forward(u, delta, xz[..., di:], A, B_, C_, D, dt_bias, None, True, chunk_len)
            del u, delta
            out = F.linear(y, ow, ob)
        A_, D_, bias_, hstart, dsum, cfg = saved
        ctx.save_for_backward(xz, conv_w, conv_b, x_dbl, xw, dtw, ow, A_, D_, bias_, hstart, dsum)
        ctx.cfg = (cfg, R, N, cplx, ob is not None, A.dtype)
        return out

    @staticmethod
    def backward(ctx, dout):
        xz, conv_w, conv_b, x_dbl, xw, dtw, ow, A_, D_, bias_, hstart, dsum = ctx.saved_tensors
        cfg, R, N, cplx, has_ob, a_dtype = ctx.cfg
        di = xz.shape[-1] // 2
        x, z = xz[..., :di], xz[..., di:]
        with torch.autocast(xz.device.type, enabled=False):
            dout = dout.to(xz.dtype).contiguous()
            u = conv_tm_forward(x, conv_w, conv_b)  # recomputed, not saved
            delta = F.linear(x_dbl[..., :R], dtw)  # recomputed, not saved
            B_, C_ = _bc_from_xdbl(x_dbl, R, N, cplx)
            dy = dout @ ow  # (b, L, di): gradient of the gated scan output
            dxz = torch.empty_like(xz)
            # in place: the gated output (recomputed for out_proj's dW) overwrites dy, ddelta overwrites delta
            du, ddelta, _, dBs, dCs, dA, dD, dbias, _ = scan_backward(
                (A_, D_, bias_, hstart, dsum, cfg), u, delta, z, B_, C_, dy, None, dz_=dxz[..., di:], yz=dy,
                ddelta_=delta)
            yz = dy
            del delta, dy
            dout2, yz2 = dout.flatten(0, 1), yz.flatten(0, 1)
            dow = dout2.t() @ yz2  # (d_model, di)
            dob = dout2.sum(0, dtype=torch.float32).to(xz.dtype) if has_ob else None
            del yz, yz2
            dd = ddelta.flatten(0, 1)
            ddt_low = ddelta @ dtw  # (b, L, R)
            ddtw = dd.t() @ x_dbl[..., :R].flatten(0, 1)  # (di, R)
            del ddelta, dd
            dBs, dCs = dBs.squeeze(1), dCs.squeeze(1)  # (b, L, N[, 2]) float32
            if cplx:
                parts = [ddt_low, dBs[..., 0], dBs[..., 1], dCs[..., 0], dCs[..., 1]]
            else:
                parts = [ddt_low, dBs, dCs]
            dx_dbl = torch.cat([p.to(xz.dtype) for p in parts], dim=-1)  # (b, L, R + n_bc)
            dxw = dx_dbl.flatten(0, 1).t() @ u.flatten(0, 1)  # (R + n_bc, di)
            du2 = dx_dbl @ xw  # (b, L, di): x_proj's share of the conv output's gradient
            dcw, dcb = conv_tm_backward(x, conv_w, conv_b, du, du2, dxz[..., :di])
        dA = dA.to(a_dtype)
        return (dxz, dcw.to(conv_w.dtype), None if dcb is None else dcb.to(conv_b.dtype), dxw, ddtw, dbias,
                dA, dD, dow, dob, None)
