"""Triton kernels for the causal depthwise conv1d (forward, backward) and its decoding update.

Layout (batch, dim, L), L contiguous: a program owns a (BD channels x BL steps) tile, so every load
and store is coalesced along time. The backward recomputes the pre-activation (no saved activations):
gpre[s] = gout[s] * silu'(pre[s]); dx[t] = sum_k w[k] gpre[t + W-1-k]; dw/dbias are reduced in the
program and written as one partial per (batch, time block), summed on the host (deterministic).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .backend import triton_interpret


@triton.jit
def _tile(d, L, BD: tl.constexpr, BL: tl.constexpr):
    """A program's (BD channels x BL steps) tile of the (b, d, L) grid (b * cdiv(d, BD), cdiv(L, BL)): batch
    row, channels and their mask, time positions s, and each channel's row offset into x."""
    nbd = tl.cdiv(d, BD)
    pid_b = tl.program_id(0) // nbd
    dch = (tl.program_id(0) % nbd) * BD + tl.arange(0, BD)
    dmask = dch < d
    s = tl.program_id(1) * BL + tl.arange(0, BL)
    row = (pid_b * d + dch).to(tl.int64) * L
    return pid_b, dch, dmask, s, row


@triton.jit
def _taps(x_ptr, w_ptr, row, dch, dmask, s, L, k, W: tl.constexpr):
    """Tap k at positions s: x[s - (W-1) + k] (0 outside [0, L)) as a (BD, BL) tile, and w[:, k] (BD,)."""
    p = s - (W - 1) + k
    xk = tl.load(x_ptr + row[:, None] + p[None, :], mask=dmask[:, None] & ((p >= 0) & (p < L))[None, :],
                 other=0.0).to(tl.float32)
    wk = tl.load(w_ptr + dch * W + k, mask=dmask, other=0.0).to(tl.float32)
    return xk, wk


@triton.jit
def _pre(x_ptr, w_ptr, bias_ptr, row, dch, dmask, s, L, W: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Pre-activation at positions s (BL,): bias + sum_k w[:, k] x[s - (W-1) + k]."""
    acc = tl.zeros([row.shape[0], s.shape[0]], tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + dch, mask=dmask, other=0.0).to(tl.float32)[:, None]
    for k in tl.static_range(W):
        xk, wk = _taps(x_ptr, w_ptr, row, dch, dmask, s, L, k, W)
        acc += wk[:, None] * xk
    return acc


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, d, L,
                     W: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                     BD: tl.constexpr, BL: tl.constexpr):
    pid_b, dch, dmask, s, row = _tile(d, L, BD, BL)
    y = _pre(x_ptr, w_ptr, bias_ptr, row, dch, dmask, s, L, W, HAS_BIAS)
    if ACT:
        y = y * tl.sigmoid(y)
    tl.store(out_ptr + row[:, None] + s[None, :], y.to(out_ptr.dtype.element_ty),
             mask=dmask[:, None] & (s < L)[None, :])


@triton.jit
def _gpre(x_ptr, w_ptr, bias_ptr, g_ptr, row, dch, dmask, s, L, W: tl.constexpr, HAS_BIAS: tl.constexpr,
          ACT: tl.constexpr):
    """dL/dpre at positions s (0 outside [0, L))."""
    inb = dmask[:, None] & ((s >= 0) & (s < L))[None, :]
    g = tl.load(g_ptr + row[:, None] + s[None, :], mask=inb, other=0.0).to(tl.float32)
    if ACT:
        pre = _pre(x_ptr, w_ptr, bias_ptr, row, dch, dmask, s, L, W, HAS_BIAS)
        sg = tl.sigmoid(pre)
        g = g * sg * (1.0 + pre * (1.0 - sg))
    return g


@triton.jit
def _conv_bwd_kernel(x_ptr, w_ptr, bias_ptr, g_ptr, dx_ptr, dw_ptr, db_ptr, d, L, NLB,
                     W: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                     BD: tl.constexpr, BL: tl.constexpr):
    pid_b, dch, dmask, s, row = _tile(d, L, BD, BL)
    part = ((pid_b * NLB + tl.program_id(1)) * d + dch).to(tl.int64)  # (batch, time block, d) partial rows
    g0 = _gpre(x_ptr, w_ptr, bias_ptr, g_ptr, row, dch, dmask, s, L, W, HAS_BIAS, ACT)
    if HAS_BIAS:
        tl.store(db_ptr + part, tl.sum(g0, axis=1), mask=dmask)
    dx = tl.zeros([BD, BL], tl.float32)
    for k in tl.static_range(W):
        xk, wk = _taps(x_ptr, w_ptr, row, dch, dmask, s, L, k, W)
        tl.store(dw_ptr + part * W + k, tl.sum(g0 * xk, axis=1), mask=dmask)
        # dx[t] gets w[k] * gpre[t + W-1-k]
        if k == W - 1:
            gk = g0
        else:
            gk = _gpre(x_ptr, w_ptr, bias_ptr, g_ptr, row, dch, dmask, s + (W - 1 - k), L, W, HAS_BIAS, ACT)
        dx += wk[:, None] * gk
    tl.store(dx_ptr + row[:, None] + s[None, :], dx.to(dx_ptr.dtype.element_ty),
             mask=dmask[:, None] & (s < L)[None, :])


def _blocks(d: int, L: int, x: Tensor) -> tuple[int, int]:
    if x.device.type != "cuda" or triton_interpret():
        return min(64, triton.next_power_of_2(d)), min(256, triton.next_power_of_2(L))
    return min(16, triton.next_power_of_2(d)), min(256, max(16, triton.next_power_of_2(L)))


class _CausalConv1dTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, act):
        b, d, L = x.shape
        W = weight.shape[1]
        x_ = x.contiguous()
        w_ = weight.contiguous()
        out = torch.empty_like(x_)
        BD, BL = _blocks(d, L, x_)
        grid = (b * triton.cdiv(d, BD), triton.cdiv(L, BL))
        _conv_fwd_kernel[grid](x_, w_, bias if bias is not None else w_, out, d, L,
                               W=W, HAS_BIAS=bias is not None, ACT=act, BD=BD, BL=BL)
        ctx.save_for_backward(x_, w_, bias)
        ctx.act = act
        return out

    @staticmethod
    def backward(ctx, gout):
        x_, w_, bias = ctx.saved_tensors
        b, d, L = x_.shape
        W = w_.shape[1]
        BD, BL = _blocks(d, L, x_)
        nlb = triton.cdiv(L, BL)
        dx = torch.empty_like(x_)
        dwp = torch.empty((b, nlb, d, W), device=x_.device, dtype=torch.float32)
        dbp = torch.empty((b, nlb, d), device=x_.device, dtype=torch.float32) if bias is not None else None
        _conv_bwd_kernel[(b * triton.cdiv(d, BD), nlb)](
            x_, w_, bias if bias is not None else w_, gout.contiguous(), dx, dwp,
            dbp if dbp is not None else dwp, d, L, nlb,
            W=W, HAS_BIAS=bias is not None, ACT=ctx.act, BD=BD, BL=BL)
        dw = dwp.sum((0, 1)).to(w_.dtype)
        db = dbp.sum((0, 1)).to(bias.dtype) if bias is not None else None
        return dx, dw, db, None


def causal_conv1d_triton(x: Tensor, weight: Tensor, bias: Tensor | None, act: bool) -> Tensor:
    """x (b, d, L), weight (d, W), bias (d,) or None; SiLU if ``act``. Returns (b, d, L), differentiable."""
    return _CausalConv1dTriton.apply(x, weight, bias, act)


@triton.jit
def _conv_update_kernel(x_ptr, state_ptr, w_ptr, bias_ptr, out_ptr, d, sx,
                        W: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, BD: tl.constexpr):
    pid_b = tl.program_id(0)
    dch = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = dch < d
    row = (pid_b * d + dch).to(tl.int64)
    xv = tl.load(x_ptr + pid_b.to(tl.int64) * sx + dch, mask=dmask, other=0.0)
    acc = tl.zeros([BD], tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + dch, mask=dmask, other=0.0).to(tl.float32)
    for k in tl.static_range(W):
        if k == W - 1:
            v = xv.to(state_ptr.dtype.element_ty)
        else:
            v = tl.load(state_ptr + row * W + k + 1, mask=dmask, other=0.0)
        acc += tl.load(w_ptr + dch * W + k, mask=dmask, other=0.0).to(tl.float32) * v.to(tl.float32)
    # roll the state: a block narrower than the program's threads is held by several threads (replicas), so
    # every replica reads the old values before any writes new ones (barriers), or a late one reads a new value
    tl.debug_barrier()
    for k in tl.static_range(W - 1):
        tl.store(state_ptr + row * W + k, tl.load(state_ptr + row * W + k + 1, mask=dmask, other=0.0), mask=dmask)
        tl.debug_barrier()
    tl.store(state_ptr + row * W + W - 1, xv.to(state_ptr.dtype.element_ty), mask=dmask)
    if ACT:
        acc = acc * tl.sigmoid(acc)
    tl.store(out_ptr + row, acc.to(out_ptr.dtype.element_ty), mask=dmask)


def causal_conv1d_update_triton(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None,
                                act: bool) -> Tensor:
    """x (b, d), rows may be strided (a view of in_proj's output); conv_state (b, d, W) rolled in place
    (must be contiguous); returns (b, d) contiguous."""
    if not conv_state.is_contiguous():
        raise ValueError("conv_state must be contiguous to be updated in place by the Triton kernel")
    b, d = x.shape
    W = weight.shape[1]
    if x.stride(1) != 1:
        x = x.contiguous()
    out = torch.empty((b, d), device=x.device, dtype=x.dtype)
    BD = min(256, triton.next_power_of_2(d))
    w_ = weight.contiguous()
    _conv_update_kernel[(b, triton.cdiv(d, BD))](
        x, conv_state, w_, bias if bias is not None else w_, out, d, x.stride(0),
        W=W, HAS_BIAS=bias is not None, ACT=act, BD=BD)
    return out
