"""Triton backward kernel of the fused selective scan (launched by ``selective_scan_triton``).

Per program (BD channels x N states of one batch row, one time chunk):
  pass 1 re-runs the chunk forward from its saved start state and checkpoints the state every BT steps
  (a transient (batch, L/BT, N, dim) buffer; nothing of size (batch, dim, L, N) is ever stored);
  pass 2 walks the sub-chunks right to left: it re-runs BT steps keeping their states in registers
  (a tuple), then walks them backwards with the adjoint state G (dL/dh), producing du, ddelta, dz per
  step, dB/dC partials reduced over the program's channels, and dA/dD/ddelta_bias accumulators.
The LOCAL variant only computes the adjoint state leaving each chunk (for the cross-chunk combine).
Complex gradients follow PyTorch's convention (dL/dRe + i dL/dIm), as the reference does.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .selective_scan_triton_kernels import (
    LN2, advance, decay, load_state, loop_bound, prologue, step_load, store_state,
)


@triton.jit
def _gate(dout_ptr, z_ptr, so, zo, m, HAS_Z: tl.constexpr):
    """(dy, dout, z, sigmoid(z)): dy = dL/d(y + D u) = dout * silu(z). so / zo: offsets of dout / z."""
    g = tl.load(dout_ptr + so, mask=m, other=0.0).to(tl.float32)
    if HAS_Z:
        zz = tl.load(z_ptr + zo, mask=m, other=0.0).to(tl.float32)
        s = tl.sigmoid(zz)
        return g * zz * s, g, zz, s
    else:
        return g, g, g, g


@triton.jit
def scan_bwd_kernel(
    u_ptr, delta_ptr, z_ptr, b_ptr, c_ptr, A_ptr, D_ptr, bias_ptr, dout_ptr,
    hstart_ptr, gcarry_ptr, scratch_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, oflow_ptr, dh0_ptr, yz_ptr,
    d, L, N, G, dpg, K, Lc, NSUB, xz, sz,
    LOCAL: tl.constexpr, STORE_YZ: tl.constexpr, HAS_Z: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, CPLX: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, BT: tl.constexpr,
    SCALAR_D: tl.constexpr, EVEN_N: tl.constexpr,
):
    """LOCAL: adjoint state leaving each chunk to the left, from a zero gradient at its right end.
    Else: all gradients of chunk k, given the gradient entering from its right (gcarry).
    z and dz rows are ``sz`` elements apart (see the forward). STORE_YZ (needs HAS_Z): also write the gated
    output y * silu(z) to yz (b, L, d), recomputed here, so a caller need not keep it for its own backward."""
    pid_b, blk, k, dch, n, nmask, m2, T2, ND, ar, ai, bg, zd, zn, kb, bias, Dv = prologue(
        A_ptr, bias_ptr, D_ptr, d, N, G, dpg, K, xz, BD, BN, CPLX, SCALAR_D, EVEN_N, HAS_BIAS, HAS_D)
    nblk = d // BD
    cw = 2 if CPLX else 1
    P = 2 if CPLX else 1
    scale = 2.0 if CPLX else 1.0
    t_start = k * Lc
    t_end = tl.minimum(L, t_start + Lc)
    ns = tl.cdiv(t_end - t_start, BT)
    if LOCAL:
        Gr = tl.zeros([BN, BD], tl.float32)
        Gi = tl.zeros([BN, BD], tl.float32)
        for j in range(loop_bound(ns)):
            t0 = t_start + (ns - 1 - j) * BT
            for i in tl.static_range(BT - 1, -1, -1):
                so, m, dt, sig, uu, br, bi, cr, ci = step_load(delta_ptr, u_ptr, b_ptr, c_ptr, pid_b, bg, t0 + i, t_end,
                                                              L, d, N, dch, n, nmask, zd, zn, bias, HAS_BIAS,
                                                              SOFTPLUS, CPLX)
                zo = (pid_b * L + t0 + i).to(tl.int64) * sz + dch
                dy, g, zz, s = _gate(dout_ptr, z_ptr, so, zo, m, HAS_Z)
                a_r, a_i = decay(dt, ar, ai, CPLX)
                sdy = (scale * dy)[None, :]
                if CPLX:
                    gr = Gr + sdy * cr[:, None]
                    gi = Gi - sdy * ci[:, None]
                    Gr, Gi = a_r * gr + a_i * gi, a_r * gi - a_i * gr
                else:
                    Gr = a_r * (Gr + sdy * cr[:, None])
        store_state(oflow_ptr, kb, T2, Gr, Gi, m2, ND, CPLX)
    else:
        Gr, Gi = load_state(gcarry_ptr, kb, T2, m2, ND, CPLX)
        hr, hi = load_state(hstart_ptr, kb, T2, m2, ND, CPLX)
        # pass 1: re-run the chunk forward, checkpointing the state at every sub-chunk start
        sub0 = t_start // BT
        for j in range(loop_bound(ns)):
            store_state(scratch_ptr, (pid_b * NSUB + sub0 + j).to(tl.int64) * (P * ND), T2, hr, hi, m2, ND, CPLX)
            if j < ns - 1:
                for i in tl.static_range(BT):
                    so, m, dt, sig, uu, br, bi, cr, ci = step_load(
                        delta_ptr, u_ptr, b_ptr, c_ptr, pid_b, bg, t_start + j * BT + i, t_end, L, d, N, dch, n,
                        nmask, zd, zn, bias, HAS_BIAS, SOFTPLUS, CPLX)
                    a_r, a_i = decay(dt, ar, ai, CPLX)
                    hr, hi = advance(hr, hi, a_r, a_i, dt, uu, br, bi, CPLX)
        dA_r = tl.zeros([BN, BD], tl.float32)
        dA_i = tl.zeros([BN, BD], tl.float32)
        dD = tl.zeros([BD], tl.float32)
        dbias = tl.zeros([BD], tl.float32)
        prow = pid_b * nblk + blk  # this program's rows of the (b, nblk, L, N) dB/dC partials
        # pass 2: sub-chunks right to left; each re-runs its BT steps in registers, then walks back
        for j in range(loop_bound(ns)):
            s_ = ns - 1 - j
            t0 = t_start + s_ * BT
            hr, hi = load_state(scratch_ptr, (pid_b * NSUB + sub0 + s_).to(tl.int64) * (P * ND), T2, m2, ND, CPLX)
            HR = ()
            HI = ()
            PR = ()  # h_{t-1} of each step (the same registers as HR shifted by one)
            PI = ()
            AR = ()
            AI = ()
            IN = ()
            for i in tl.static_range(BT):
                so, m, dt, sig, uu, br, bi, cr, ci = step_load(delta_ptr, u_ptr, b_ptr, c_ptr, pid_b, bg, t0 + i, t_end,
                                                              L, d, N, dch, n, nmask, zd, zn, bias, HAS_BIAS,
                                                              SOFTPLUS, CPLX)
                a_r, a_i = decay(dt, ar, ai, CPLX)
                PR = PR + (hr,)
                PI = PI + (hi,)
                hr, hi = advance(hr, hi, a_r, a_i, dt, uu, br, bi, CPLX)
                HR = HR + (hr,)
                HI = HI + (hi,)
                AR = AR + (a_r,)
                AI = AI + (a_i,)
                IN = IN + ((dt, sig, uu, br, bi, cr, ci),)
            for i in tl.static_range(BT - 1, -1, -1):
                t = t0 + i
                m = (zd + t) < t_end
                mn = nmask & ((zn + t) < t_end)
                so = (pid_b * L + t).to(tl.int64) * d + dch
                po = (prow * L + t).to(tl.int64) * (N * cw) + n * cw
                dt, sig, uu, br, bi, cr, ci = IN[i]
                hr = HR[i]
                hi = HI[i]
                a_r = AR[i]
                a_i = AI[i]
                pr = PR[i]
                pi = PI[i]
                zo = (pid_b * L + t).to(tl.int64) * sz + dch
                dy, g, zz, s = _gate(dout_ptr, z_ptr, so, zo, m, HAS_Z)
                if HAS_Z:
                    if CPLX:
                        yv = 2.0 * tl.sum(hr * cr[:, None] - hi * ci[:, None], axis=0)
                    else:
                        yv = tl.sum(hr * cr[:, None], axis=0)
                    yv += Dv * uu
                    dzv = g * yv * s * (1.0 + zz * (1.0 - s))
                    tl.store(dz_ptr + zo, dzv.to(dz_ptr.dtype.element_ty), mask=m)
                    if STORE_YZ:
                        tl.store(yz_ptr + so, (yv * zz * s).to(yz_ptr.dtype.element_ty), mask=m)
                if HAS_D:
                    dD += dy * uu
                sdy = (scale * dy)[None, :]
                dtu = (dt * uu)[None, :]
                if CPLX:
                    gr = Gr + sdy * cr[:, None]
                    gi = Gi - sdy * ci[:, None]
                    qr = a_r * pr - a_i * pi  # a_t h_{t-1}
                    qi = a_r * pi + a_i * pr
                    wr = gr * qr + gi * qi  # W = G conj(a_t h_{t-1})
                    wi = gi * qr - gr * qi
                    dA_r += wr * dt[None, :]
                    dA_i += wi * dt[None, :]
                    ddt = tl.sum(wr * ar * LN2 + wi * ai, axis=0)
                    Q = tl.sum(gr * br[:, None] + gi * bi[:, None], axis=0)
                    tl.store(dB_ptr + po, tl.sum(gr * dtu, axis=1), mask=mn)
                    tl.store(dB_ptr + po + 1, tl.sum(gi * dtu, axis=1), mask=mn)
                    tl.store(dC_ptr + po, tl.sum(sdy * hr, axis=1), mask=mn)
                    tl.store(dC_ptr + po + 1, -tl.sum(sdy * hi, axis=1), mask=mn)
                    Gr, Gi = a_r * gr + a_i * gi, a_r * gi - a_i * gr
                else:
                    gr = Gr + sdy * cr[:, None]
                    w = gr * (a_r * pr)
                    dA_r += w * dt[None, :]
                    ddt = tl.sum(w * ar, axis=0) * LN2
                    Q = tl.sum(gr * br[:, None], axis=0)
                    tl.store(dB_ptr + po, tl.sum(gr * dtu, axis=1), mask=mn)
                    tl.store(dC_ptr + po, tl.sum(sdy * hr, axis=1), mask=mn)
                    Gr = a_r * gr
                duv = dt * Q
                if HAS_D:
                    duv += dy * Dv
                ddt += uu * Q
                if SOFTPLUS:
                    ddt = ddt * sig
                ddt = tl.where(m, ddt, 0.0)
                if HAS_BIAS:
                    dbias += ddt
                tl.store(du_ptr + so, duv.to(du_ptr.dtype.element_ty), mask=m)
                tl.store(ddelta_ptr + so, ddt.to(ddelta_ptr.dtype.element_ty), mask=m)
        pk = (pid_b * K + k) * d + dch  # (b, K, d) partial rows
        store_state(dA_ptr, kb, T2, dA_r, dA_i, m2, ND, CPLX)
        if HAS_D:
            tl.store(dD_ptr + pk, dD)
        if HAS_BIAS:
            tl.store(dbias_ptr + pk, dbias)
        if k == 0:
            store_state(dh0_ptr, pid_b.to(tl.int64) * (P * ND), T2, Gr, Gi, m2, ND, CPLX)
