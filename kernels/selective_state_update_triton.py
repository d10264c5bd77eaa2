"""Triton kernel for one decoding step of the selective SSM (see ``selective_state_update``).

A program owns BD channels x N states of one batch row: it reads the fp32 state once, updates it in
place and writes the output, so the step is a single pass over the state (its bytes floor). Complex
states/A/B/C travel as interleaved (re, im) float32 views.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .backend import num_sms, triton_interpret


@triton.jit
def softplus(dt):
    """log(1 + e^dt) in fp32, exact for small e^dt and linear above 20 (as torch's softplus)."""
    e = tl.exp(tl.minimum(dt, 20.0))
    w = 1.0 + e
    return tl.where(dt > 20.0, dt, tl.where(w == 1.0, e, tl.log(w) * e / (w - 1.0)))


@triton.jit
def update_real(h, dt, dtx, ar, bv, cv):
    """One real step on a (BD, BN) state tile: h = exp(dt A) h + dt x B; returns (h, sum_n C h)."""
    h = tl.exp(dt[:, None] * ar) * h + dtx * bv
    return h, tl.sum(h * cv, axis=1)


@triton.jit
def update_cplx(hr, hi, dt, dtx, ar, ai, br, bi, cr, ci):
    """One complex step (state, A, B, C as re/im tiles); returns (hr, hi, 2 Re(sum_n C h))."""
    mag = tl.exp(dt[:, None] * ar)
    pr = mag * tl.cos(dt[:, None] * ai)
    pi = mag * tl.sin(dt[:, None] * ai)
    hr, hi = pr * hr - pi * hi + dtx * br, pr * hi + pi * hr + dtx * bi
    return hr, hi, 2.0 * tl.sum(hr * cr - hi * ci, axis=1)


@triton.jit
def _ssu_kernel(state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr,
                d, N, G, dpg,
                HAS_Z: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                CPLX: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr):
    pid_b = tl.program_id(0)
    dch = tl.program_id(1) * BD + tl.arange(0, BD)
    n = tl.arange(0, BN)
    dmask = dch < d
    m2 = dmask[:, None] & (n < N)[None, :]
    row = (pid_b * d + dch).to(tl.int64)
    st = (row * N)[:, None] + n[None, :]
    a_off = dch[:, None] * N + n[None, :]
    bc = ((pid_b * G + dch // dpg).to(tl.int64) * N)[:, None] + n[None, :]  # per-row group
    dt = tl.load(dt_ptr + row, mask=dmask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + dch, mask=dmask, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dt = softplus(dt)
    xv = tl.load(x_ptr + row, mask=dmask, other=0.0).to(tl.float32)
    dtx = (dt * xv)[:, None]
    if CPLX:
        ar = tl.load(A_ptr + 2 * a_off, mask=m2, other=0.0)
        ai = tl.load(A_ptr + 2 * a_off + 1, mask=m2, other=0.0)
        hr = tl.load(state_ptr + 2 * st, mask=m2, other=0.0)
        hi = tl.load(state_ptr + 2 * st + 1, mask=m2, other=0.0)
        br = tl.load(B_ptr + 2 * bc, mask=m2, other=0.0)
        bi = tl.load(B_ptr + 2 * bc + 1, mask=m2, other=0.0)
        cr = tl.load(C_ptr + 2 * bc, mask=m2, other=0.0)
        ci = tl.load(C_ptr + 2 * bc + 1, mask=m2, other=0.0)
        hr, hi, y = update_cplx(hr, hi, dt, dtx, ar, ai, br, bi, cr, ci)
        tl.store(state_ptr + 2 * st, hr, mask=m2)
        tl.store(state_ptr + 2 * st + 1, hi, mask=m2)
    else:
        ar = tl.load(A_ptr + a_off, mask=m2, other=0.0)
        h = tl.load(state_ptr + st, mask=m2, other=0.0)
        bv = tl.load(B_ptr + bc, mask=m2, other=0.0).to(tl.float32)
        cv = tl.load(C_ptr + bc, mask=m2, other=0.0).to(tl.float32)
        h, y = update_real(h, dt, dtx, ar, bv, cv)
        tl.store(state_ptr + st, h, mask=m2)
    if HAS_D:
        y += tl.load(D_ptr + dch, mask=dmask, other=0.0).to(tl.float32) * xv
    if HAS_Z:
        zz = tl.load(z_ptr + row, mask=dmask, other=0.0).to(tl.float32)
        y = y * zz * tl.sigmoid(zz)
    tl.store(out_ptr + row, y.to(out_ptr.dtype.element_ty), mask=dmask)


def step_blocks(b: int, d: int, BN: int, device: torch.device) -> tuple[int, int]:
    """(channels per program, warps) for a one-token step over a (b, d, BN) state."""
    if device.type != "cuda" or triton_interpret():
        return min(64, triton.next_power_of_2(d)), 4  # the interpreter: few, wide programs
    # A step is one pass over b*d*N state values; at small batch the latency is how much of that
    # pass one SM does in series, so spread the channels over at least ~2 programs per SM
    # (b=1, d=4096, N=16: 256 programs of 16 channels instead of 64 programs of 64).
    want = max(1, (b * d) // (2 * num_sms(device.index or 0)))  # channels per program
    BD = min(triton.next_power_of_2(d), max(16, min(1024 // BN, triton.next_power_of_2(want) // 2)))
    # Large steps are bandwidth bound: 16 state values per thread beat 8 (H200, d 1536, N 16, b 64,
    # bench/tune_step.py: (64, 2) 5.9 us, (64, 4) 7.1 us); small ones are latency bound (b 16: (64, 4) 2.9 us,
    # (64, 2) 3.5 us).
    per_thread = 512 if b * d >= 65536 else 256
    return BD, max(1, min(4, BD * BN // per_thread))


def selective_state_update_triton(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                                  D: Tensor | None, z: Tensor | None, dt_bias: Tensor | None,
                                  dt_softplus: bool) -> Tensor:
    """state (b, d, N) fp32/complex64 (contiguous, updated in place); B, C (b, g, N). Returns (b, d)."""
    if not state.is_contiguous() or state.dtype not in (torch.float32, torch.complex64):
        raise ValueError("state must be a contiguous float32/complex64 tensor for the Triton step kernel")
    b, d, N = state.shape
    G = B.shape[1]
    cplx = A.is_complex()

    def real(t: Tensor) -> Tensor:
        return torch.view_as_real(t.to(torch.complex64).contiguous()) if cplx else t.contiguous()

    st = torch.view_as_real(state) if cplx else state
    out = torch.empty_like(x)
    BN = triton.next_power_of_2(N)
    BD, warps = step_blocks(b, d, BN, x.device)
    x_ = x.contiguous()
    _ssu_kernel[(b, triton.cdiv(d, BD))](
        st, x_, dt.contiguous(), real(A) if cplx else A.float().contiguous(), real(B), real(C),
        D if D is not None else x_, z.contiguous() if z is not None else x_,
        dt_bias if dt_bias is not None else x_, out, d, N, G, d // G,
        HAS_Z=z is not None, HAS_D=D is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus),
        CPLX=cplx, BD=BD, BN=BN, num_warps=warps)
    return out
