"""Triton kernels of the fused selective scan (launched by ``selective_scan_triton``).

Design (why it looks like this):

* One program owns a block of BD channels x N states of one batch row, kept in registers, and walks
  time sequentially. Every (channel, state) lane is an independent recurrence h = a h + x, so the
  work is wide (BD*N lanes a program, b*d*N in all) and the only serial chain is one FMA per step.
  B_t / C_t are loaded once per step for BD channels (the peer reloads them for every channel).
* Time is cut into K chunks of Lc steps when b*d alone cannot fill the GPU (long L, small dim).
  Chunks run in parallel: a LOCAL pass gets each chunk's end state from a zero start plus its total
  decay sum(delta) (the product of exp(delta_t A) over a chunk is exp(A sum delta)), a tiny
  ``_combine`` kernel chains the K chunk states, and the FINAL pass reruns each chunk from its true
  start state. The backward does the same in reverse for the adjoint state.
* Time steps are unrolled BT at a time (``tl.static_range``) so loads are issued ahead of use; in the
  backward the BT states of a sub-chunk stay in registers (a tuple), recomputed from a per-sub-chunk
  checkpoint written by a forward re-run, so nothing of size (batch, dim, L, N) is ever stored.
* Complex A/B/C/state are carried as separate real and imaginary fp32 tiles (CPLX constexpr); the
  real path compiles without them. All offsets that scale with L are int64.
* dB/dC are reduced over the program's channels in registers and written as one fp32 partial per
  (channel block, n, t) — deterministic, no atomics; the host sums the few partials per group.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _softplus_sig(x, SOFTPLUS: tl.constexpr):
    """(softplus(x), sigmoid(x)) with an accurate log1p; identity and placeholder without softplus."""
    if SOFTPLUS:
        e = tl.exp(tl.minimum(x, 20.0))
        w = 1.0 + e
        lp = tl.where(w == 1.0, e, tl.log(w) * e / (w - 1.0))  # log1p(e) (Goldberg's trick)
        return tl.where(x > 20.0, x, lp), e / w
    else:
        return x, x


@triton.jit
def _step_load(delta_ptr, u_ptr, b_ptr, c_ptr, row, bc, t, m, nm, bias,
               HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, CPLX: tl.constexpr):
    """Inputs of step t: dt (after bias+softplus, 0 where masked), sigmoid, u, B (re, im), C (re, im).
    m (BD,) / nm (BN,) are the step's masks, built as vectors (the interpreter rejects scalar masks)."""
    dt = tl.load(delta_ptr + row + t, mask=m, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt = dt + bias
    dt, sig = _softplus_sig(dt, SOFTPLUS)
    dt = tl.where(m, dt, 0.0)
    uu = tl.load(u_ptr + row + t, mask=m, other=0.0).to(tl.float32)
    if CPLX:
        br = tl.load(b_ptr + bc + 2 * t, mask=nm, other=0.0)
        bi = tl.load(b_ptr + bc + 2 * t + 1, mask=nm, other=0.0)
        cr = tl.load(c_ptr + bc + 2 * t, mask=nm, other=0.0)
        ci = tl.load(c_ptr + bc + 2 * t + 1, mask=nm, other=0.0)
    else:
        br = tl.load(b_ptr + bc + t, mask=nm, other=0.0).to(tl.float32)
        cr = tl.load(c_ptr + bc + t, mask=nm, other=0.0).to(tl.float32)
        bi = br
        ci = cr
    return dt, sig, uu, br, bi, cr, ci


@triton.jit
def _decay(dt, ar, ai, CPLX: tl.constexpr):
    """a = exp(dt * A) as (re, im) tiles (BD, BN)."""
    if CPLX:
        mag = tl.exp(dt[:, None] * ar)
        ph = dt[:, None] * ai
        return mag * tl.cos(ph), mag * tl.sin(ph)
    else:
        a = tl.exp(dt[:, None] * ar)
        return a, a


@triton.jit
def _prologue(A_ptr, pid_b, blk, d, N, G, dpg, BD: tl.constexpr, BN: tl.constexpr, CPLX: tl.constexpr):
    """Channel/state indices, A tiles and the int64 row bases of this program."""
    dch = blk * BD + tl.arange(0, BD)
    n = tl.arange(0, BN)
    nmask = n < N
    m2 = nmask[None, :] & (dch[:, None] < d)
    a_off = dch[:, None] * N + n[None, :]
    if CPLX:
        ar = tl.load(A_ptr + 2 * a_off, mask=m2, other=0.0)
        ai = tl.load(A_ptr + 2 * a_off + 1, mask=m2, other=0.0)
    else:
        ar = tl.load(A_ptr + a_off, mask=m2, other=0.0)
        ai = ar
    gi = (blk * BD) // dpg  # BD divides channels-per-group: one group per program
    row_id = (pid_b * d + dch).to(tl.int64)  # (BD,)
    bc_id = (pid_b * G + gi).to(tl.int64) * N + n  # (BN,)
    zd = tl.zeros([BD], tl.int32)
    zn = tl.zeros([BN], tl.int32)
    return dch, n, nmask, m2, ar, ai, row_id, bc_id, zd, zn


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, z_ptr, b_ptr, c_ptr, A_ptr, D_ptr, bias_ptr,
    hstart_ptr, out_ptr, hend_ptr, dsum_ptr, last_ptr,
    d, L, N, G, dpg, K, Lc,
    LOCAL: tl.constexpr, HAS_Z: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, CPLX: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, BT: tl.constexpr,
):
    """LOCAL: chunk end state from h=0 and sum(dt) -> hend, dsum.  Else: out + last state from hstart."""
    nblk = d // BD
    pid_b = tl.program_id(0) // nblk
    blk = tl.program_id(0) % nblk
    k = tl.program_id(1)
    dch, n, nmask, m2, ar, ai, row_id, bc_id, zd, zn = _prologue(A_ptr, pid_b, blk, d, N, G, dpg, BD, BN, CPLX)
    row = row_id * L
    bc = bc_id * L * (2 if CPLX else 1)
    st = ((row_id * K + k) * N)[:, None] + n[None, :]  # (b, d, K, N) state offsets
    bias = tl.load(bias_ptr + dch).to(tl.float32) if HAS_BIAS else 0.0
    Dv = tl.load(D_ptr + dch).to(tl.float32) if HAS_D else 0.0
    if LOCAL:
        hr = tl.zeros([BD, BN], tl.float32)
        hi = tl.zeros([BD, BN], tl.float32)
    elif CPLX:
        hr = tl.load(hstart_ptr + 2 * st, mask=m2, other=0.0)
        hi = tl.load(hstart_ptr + 2 * st + 1, mask=m2, other=0.0)
    else:
        hr = tl.load(hstart_ptr + st, mask=m2, other=0.0)
        hi = hr
    dsum = tl.zeros([BD], tl.float32)
    t_start = k * Lc
    t_end = tl.minimum(L, t_start + Lc)
    for t0 in range(t_start, t_end, BT):
        for i in tl.static_range(BT):
            t = t0 + i
            m = (zd + t) < t_end
            mn = nmask & ((zn + t) < t_end)
            dt, sig, uu, br, bi, cr, ci = _step_load(delta_ptr, u_ptr, b_ptr, c_ptr, row, bc, t, m, mn,
                                                    bias, HAS_BIAS, SOFTPLUS, CPLX)
            a_r, a_i = _decay(dt, ar, ai, CPLX)
            du = (dt * uu)[:, None]
            if CPLX:
                hr, hi = a_r * hr - a_i * hi + du * br[None, :], a_r * hi + a_i * hr + du * bi[None, :]
            else:
                hr = a_r * hr + du * br[None, :]
            if LOCAL:
                dsum += dt
            else:
                if CPLX:
                    y = 2.0 * tl.sum(hr * cr[None, :] - hi * ci[None, :], axis=1)
                else:
                    y = tl.sum(hr * cr[None, :], axis=1)
                if HAS_D:
                    y += Dv * uu
                if HAS_Z:
                    zz = tl.load(z_ptr + row + t, mask=m, other=0.0).to(tl.float32)
                    y = y * zz * tl.sigmoid(zz)
                tl.store(out_ptr + row + t, y.to(out_ptr.dtype.element_ty), mask=m)
    if LOCAL:
        tl.store(dsum_ptr + row_id * K + k, dsum)
        _store_state(hend_ptr, st, hr, hi, m2, CPLX)
    elif k == K - 1:
        _store_state(last_ptr, (row_id * N)[:, None] + n[None, :], hr, hi, m2, CPLX)


@triton.jit
def _store_state(ptr, off, hr, hi, mask, CPLX: tl.constexpr):
    if CPLX:
        tl.store(ptr + 2 * off, hr, mask=mask)
        tl.store(ptr + 2 * off + 1, hi, mask=mask)
    else:
        tl.store(ptr + off, hr, mask=mask)


@triton.jit
def _combine_kernel(local_ptr, dsum_ptr, A_ptr, h0_ptr, carry_ptr, R, d, N, K,
                    REVERSE: tl.constexpr, CPLX: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr):
    """Chain chunk states: carry[k] = h; h = P_k h + local[k], P_k = exp(A dsum_k) (conj, reversed k
    for the adjoint). Forward: h starts at h0 and carry[k] is chunk k's start state. Reverse: h starts
    at dL/dh_last and carry[k] is the gradient entering chunk k from its right."""
    pid = tl.program_id(0)
    dch = pid * BD + tl.arange(0, BD)
    n = tl.arange(0, BN)
    m2 = (dch[:, None] < R) & (n[None, :] < N)  # dch indexes the R = batch*dim flattened rows here
    a_off = (dch % d)[:, None] * N + n[None, :]
    row_id = dch.to(tl.int64)
    h0 = (row_id * N)[:, None] + n[None, :]
    if CPLX:
        ar = tl.load(A_ptr + 2 * a_off, mask=m2, other=0.0)
        ai = tl.load(A_ptr + 2 * a_off + 1, mask=m2, other=0.0)
        if REVERSE:
            ai = -ai
        hr = tl.load(h0_ptr + 2 * h0, mask=m2, other=0.0)
        hi = tl.load(h0_ptr + 2 * h0 + 1, mask=m2, other=0.0)
    else:
        ar = tl.load(A_ptr + a_off, mask=m2, other=0.0)
        hr = tl.load(h0_ptr + h0, mask=m2, other=0.0)
        ai = ar
        hi = hr
    for j in range(K):
        k = K - 1 - j if REVERSE else j
        st = ((row_id * K + k) * N)[:, None] + n[None, :]
        _store_state(carry_ptr, st, hr, hi, m2, CPLX)
        ds = tl.load(dsum_ptr + row_id * K + k, mask=dch < R, other=0.0)
        p_r, p_i = _decay(ds, ar, ai, CPLX)
        if CPLX:
            lr = tl.load(local_ptr + 2 * st, mask=m2, other=0.0)
            li = tl.load(local_ptr + 2 * st + 1, mask=m2, other=0.0)
            hr, hi = p_r * hr - p_i * hi + lr, p_r * hi + p_i * hr + li
        else:
            hr = p_r * hr + tl.load(local_ptr + st, mask=m2, other=0.0)


@triton.jit
def _gate(dout_ptr, z_ptr, row, t, m, HAS_Z: tl.constexpr):
    """(dy, dout, z, sigmoid(z)): dy = dL/d(y + D u) = dout * silu(z)."""
    g = tl.load(dout_ptr + row + t, mask=m, other=0.0).to(tl.float32)
    if HAS_Z:
        zz = tl.load(z_ptr + row + t, mask=m, other=0.0).to(tl.float32)
        s = tl.sigmoid(zz)
        return g * zz * s, g, zz, s
    else:
        return g, g, g, g


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, z_ptr, b_ptr, c_ptr, A_ptr, D_ptr, bias_ptr, dout_ptr,
    hstart_ptr, gcarry_ptr, scratch_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, oflow_ptr, dh0_ptr,
    d, L, N, G, dpg, K, Lc, NSUB,
    LOCAL: tl.constexpr, HAS_Z: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, CPLX: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, BT: tl.constexpr,
):
    """LOCAL: adjoint state leaving each chunk to the left, from a zero gradient at its right end.
    Else: all gradients of chunk k, given the gradient entering from its right (gcarry)."""
    nblk = d // BD
    pid_b = tl.program_id(0) // nblk
    blk = tl.program_id(0) % nblk
    k = tl.program_id(1)
    dch, n, nmask, m2, ar, ai, row_id, bc_id, zd, zn = _prologue(A_ptr, pid_b, blk, d, N, G, dpg, BD, BN, CPLX)
    row = row_id * L
    cw = 2 if CPLX else 1
    bc = bc_id * L * cw
    st = ((row_id * K + k) * N)[:, None] + n[None, :]
    bias = tl.load(bias_ptr + dch).to(tl.float32) if HAS_BIAS else 0.0
    Dv = tl.load(D_ptr + dch).to(tl.float32) if HAS_D else 0.0
    scale = 2.0 if CPLX else 1.0
    t_start = k * Lc
    t_end = tl.minimum(L, t_start + Lc)
    ns = tl.cdiv(t_end - t_start, BT)
    if LOCAL:
        Gr = tl.zeros([BD, BN], tl.float32)
        Gi = tl.zeros([BD, BN], tl.float32)
        for j in range(ns):
            t0 = t_start + (ns - 1 - j) * BT
            for i in tl.static_range(BT - 1, -1, -1):
                t = t0 + i
                m = (zd + t) < t_end
                mn = nmask & ((zn + t) < t_end)
                dt, sig, uu, br, bi, cr, ci = _step_load(delta_ptr, u_ptr, b_ptr, c_ptr, row, bc, t, m, mn,
                                                        bias, HAS_BIAS, SOFTPLUS, CPLX)
                dy, g, zz, s = _gate(dout_ptr, z_ptr, row, t, m, HAS_Z)
                a_r, a_i = _decay(dt, ar, ai, CPLX)
                sdy = (scale * dy)[:, None]
                if CPLX:
                    gr = Gr + sdy * cr[None, :]
                    gi = Gi - sdy * ci[None, :]
                    Gr, Gi = a_r * gr + a_i * gi, a_r * gi - a_i * gr
                else:
                    Gr = a_r * (Gr + sdy * cr[None, :])
        _store_state(oflow_ptr, st, Gr, Gi, m2, CPLX)
    else:
        if CPLX:
            Gr = tl.load(gcarry_ptr + 2 * st, mask=m2, other=0.0)
            Gi = tl.load(gcarry_ptr + 2 * st + 1, mask=m2, other=0.0)
            hr = tl.load(hstart_ptr + 2 * st, mask=m2, other=0.0)
            hi = tl.load(hstart_ptr + 2 * st + 1, mask=m2, other=0.0)
        else:
            Gr = tl.load(gcarry_ptr + st, mask=m2, other=0.0)
            hr = tl.load(hstart_ptr + st, mask=m2, other=0.0)
            Gi = Gr
            hi = hr
        # pass 1: re-run the chunk forward, checkpointing the state at every sub-chunk start
        sub0 = t_start // BT
        for j in range(ns):
            sc = ((row_id * NSUB + sub0 + j) * N)[:, None] + n[None, :]
            _store_state(scratch_ptr, sc, hr, hi, m2, CPLX)
            if j < ns - 1:
                for i in tl.static_range(BT):
                    t = t_start + j * BT + i
                    dt, sig, uu, br, bi, cr, ci = _step_load(delta_ptr, u_ptr, b_ptr, c_ptr, row, bc, t,
                                                            (zd + t) < t_end, nmask & ((zn + t) < t_end),
                                                            bias, HAS_BIAS, SOFTPLUS, CPLX)
                    a_r, a_i = _decay(dt, ar, ai, CPLX)
                    du = (dt * uu)[:, None]
                    if CPLX:
                        hr, hi = a_r * hr - a_i * hi + du * br[None, :], a_r * hi + a_i * hr + du * bi[None, :]
                    else:
                        hr = a_r * hr + du * br[None, :]
        dA_r = tl.zeros([BD, BN], tl.float32)
        dA_i = tl.zeros([BD, BN], tl.float32)
        dD = tl.zeros([BD], tl.float32)
        dbias = tl.zeros([BD], tl.float32)
        bpart = ((pid_b * nblk + blk) * N + n).to(tl.int64) * L * cw  # (BN,) partial dB/dC rows
        # pass 2: sub-chunks right to left; each re-runs its BT steps in registers, then walks back
        for j in range(ns):
            s_ = ns - 1 - j
            t0 = t_start + s_ * BT
            sc = ((row_id * NSUB + sub0 + s_) * N)[:, None] + n[None, :]
            if CPLX:
                hr = tl.load(scratch_ptr + 2 * sc, mask=m2, other=0.0)
                hi = tl.load(scratch_ptr + 2 * sc + 1, mask=m2, other=0.0)
            else:
                hr = tl.load(scratch_ptr + sc, mask=m2, other=0.0)
                hi = hr
            HR = ()
            HI = ()
            PR = ()  # h_{t-1} of each step (the same registers as HR shifted by one)
            PI = ()
            AR = ()
            AI = ()
            IN = ()
            for i in tl.static_range(BT):
                t = t0 + i
                inp = _step_load(delta_ptr, u_ptr, b_ptr, c_ptr, row, bc, t, (zd + t) < t_end,
                                 nmask & ((zn + t) < t_end),
                                 bias, HAS_BIAS, SOFTPLUS, CPLX)
                dt, sig, uu, br, bi, cr, ci = inp
                a_r, a_i = _decay(dt, ar, ai, CPLX)
                du = (dt * uu)[:, None]
                PR = PR + (hr,)
                PI = PI + (hi,)
                if CPLX:
                    hr, hi = a_r * hr - a_i * hi + du * br[None, :], a_r * hi + a_i * hr + du * bi[None, :]
                else:
                    hr = a_r * hr + du * br[None, :]
                HR = HR + (hr,)
                HI = HI + (hi,)
                AR = AR + (a_r,)
                AI = AI + (a_i,)
                IN = IN + (inp,)
            for i in tl.static_range(BT - 1, -1, -1):
                t = t0 + i
                m = (zd + t) < t_end
                mn = nmask & ((zn + t) < t_end)
                dt, sig, uu, br, bi, cr, ci = IN[i]
                hr = HR[i]
                hi = HI[i]
                a_r = AR[i]
                a_i = AI[i]
                pr = PR[i]
                pi = PI[i]
                dy, g, zz, s = _gate(dout_ptr, z_ptr, row, t, m, HAS_Z)
                if HAS_Z:
                    if CPLX:
                        yv = 2.0 * tl.sum(hr * cr[None, :] - hi * ci[None, :], axis=1)
                    else:
                        yv = tl.sum(hr * cr[None, :], axis=1)
                    yv += Dv * uu
                    dzv = g * yv * s * (1.0 + zz * (1.0 - s))
                    tl.store(dz_ptr + row + t, dzv.to(dz_ptr.dtype.element_ty), mask=m)
                if HAS_D:
                    dD += dy * uu
                sdy = (scale * dy)[:, None]
                dtu = (dt * uu)[:, None]
                if CPLX:
                    gr = Gr + sdy * cr[None, :]
                    gi = Gi - sdy * ci[None, :]
                    qr = a_r * pr - a_i * pi  # a_t h_{t-1}
                    qi = a_r * pi + a_i * pr
                    wr = gr * qr + gi * qi  # W = G conj(a_t h_{t-1})
                    wi = gi * qr - gr * qi
                    dA_r += wr * dt[:, None]
                    dA_i += wi * dt[:, None]
                    ddt = tl.sum(wr * ar + wi * ai, axis=1)
                    Q = tl.sum(gr * br[None, :] + gi * bi[None, :], axis=1)
                    tl.store(dB_ptr + bpart + 2 * t, tl.sum(gr * dtu, axis=0), mask=mn)
                    tl.store(dB_ptr + bpart + 2 * t + 1, tl.sum(gi * dtu, axis=0), mask=mn)
                    tl.store(dC_ptr + bpart + 2 * t, tl.sum(sdy * hr, axis=0), mask=mn)
                    tl.store(dC_ptr + bpart + 2 * t + 1, -tl.sum(sdy * hi, axis=0), mask=mn)
                    Gr, Gi = a_r * gr + a_i * gi, a_r * gi - a_i * gr
                else:
                    gr = Gr + sdy * cr[None, :]
                    w = gr * (a_r * pr)
                    dA_r += w * dt[:, None]
                    ddt = tl.sum(w * ar, axis=1)
                    Q = tl.sum(gr * br[None, :], axis=1)
                    tl.store(dB_ptr + bpart + t, tl.sum(gr * dtu, axis=0), mask=mn)
                    tl.store(dC_ptr + bpart + t, tl.sum(sdy * hr, axis=0), mask=mn)
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
                tl.store(du_ptr + row + t, duv.to(du_ptr.dtype.element_ty), mask=m)
                tl.store(ddelta_ptr + row + t, ddt.to(ddelta_ptr.dtype.element_ty), mask=m)
        pk = ((pid_b * K + k) * d + dch).to(tl.int64)  # (b, K, d) partial rows
        _store_state(dA_ptr, (pk * N)[:, None] + n[None, :], dA_r, dA_i, m2, CPLX)
        if HAS_D:
            tl.store(dD_ptr + pk, dD)
        if HAS_BIAS:
            tl.store(dbias_ptr + pk, dbias)
        if k == 0:
            _store_state(dh0_ptr, (row_id * N)[:, None] + n[None, :], Gr, Gi, m2, CPLX)
