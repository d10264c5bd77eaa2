"""Triton kernels of the fused selective scan (launched by ``selective_scan_triton``).

Design (why it looks like this):

* One program owns a block of BD channels x N states of one batch row, kept in registers as an
  (N, BD) tile, and walks time sequentially. Every (state, channel) lane is an independent
  recurrence h = a h + x, so the work is wide (BD*N lanes a program, b*d*N in all) and the only
  serial chain is one FMA per step. Sequences are time-major, (batch, L, dim) (the wrapper
  transposes, a no-op for the Mamba block's own layout), so each step's u/delta/z/out of BD channels
  is one coalesced access, and B_t / C_t ((batch, groups, L, N)) one contiguous N-vector shared by BD
  channels (the peer reloads them for every channel).
* Internal state buffers are planar (..., [re, im], N, dim): tile loads are contiguous along dim.
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

import os

import triton
import triton.language as tl

# Fast trig needs inline PTX, which the interpreter cannot run (read once, at import, like Triton).
FAST_TRIG = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") != "1")
LN2 = tl.constexpr(0.6931471805599453)  # kernels hold Re(A) * log2(e); this undoes it in dA-terms

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    def loop_bound(x):
        """A runtime loop bound as a Python int. The interpreter holds each scalar as a 1-element array, and
        Triton 3.6's interpreter hands range() int(array), a TypeError from NumPy 2.4 on (later Tritons
        squeeze the array first)."""
        return x.handle.data.item() if isinstance(x, tl.tensor) else x
else:
    @triton.jit
    def loop_bound(x):
        """Compiled: the bound itself (inlined; the loop is the same scf.for as ``range(x)``)."""
        return x


@triton.jit
def _softplus_sig(x, SOFTPLUS: tl.constexpr):
    """(softplus(x), sigmoid(x)) with an accurate log1p; identity and placeholder without softplus."""
    if SOFTPLUS:
        e = tl.exp(tl.minimum(x, 20.0))
        w = 1.0 + e
        # log1p(e) without a division: a 4-term series where 1 + e would lose e's digits
        lp = tl.where(e < 0.01, e * (1.0 - e * (0.5 - e * (0.3333333 - 0.25 * e))), tl.log(w))
        return tl.where(x > 20.0, x, lp), e / w  # the sigmoid is dead code in the forward
    else:
        return x, x


@triton.jit
def step_load(delta_ptr, u_ptr, b_ptr, c_ptr, pid_b, bg, t, t_end, L, d, N, dch, n, nmask, zd, zn, bias,
              HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, CPLX: tl.constexpr):
    """Inputs of time step t (masked off at t >= t_end): so, the step's (BD,) offsets into the (b, L, d)
    sequences, and m their mask; dt (after bias+softplus, 0 where masked), sigmoid, u, B (re, im), C (re, im).
    Masks are built as vectors from the zero rows zd / zn (the interpreter rejects scalar masks)."""
    cw = 2 if CPLX else 1
    m = (zd + t) < t_end
    nm = nmask & ((zn + t) < t_end)
    so = (pid_b * L + t).to(tl.int64) * d + dch
    bo = (bg * L + t).to(tl.int64) * (N * cw) + n * cw
    dt = tl.load(delta_ptr + so, mask=m, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt = dt + bias
    dt, sig = _softplus_sig(dt, SOFTPLUS)
    dt = tl.where(m, dt, 0.0)
    uu = tl.load(u_ptr + so, mask=m, other=0.0).to(tl.float32)
    if CPLX:
        br = tl.load(b_ptr + bo, mask=nm, other=0.0)
        bi = tl.load(b_ptr + bo + 1, mask=nm, other=0.0)
        cr = tl.load(c_ptr + bo, mask=nm, other=0.0)
        ci = tl.load(c_ptr + bo + 1, mask=nm, other=0.0)
    else:
        br = tl.load(b_ptr + bo, mask=nm, other=0.0).to(tl.float32)
        cr = tl.load(c_ptr + bo, mask=nm, other=0.0).to(tl.float32)
        bi = br
        ci = cr
    return so, m, dt, sig, uu, br, bi, cr, ci


@triton.jit
def _cos_sin(ph):
    """cos, sin. On the GPU: the special-function unit's approximations after reducing the phase to
    [-pi, pi] (libdevice's precise sinf/cosf cost ~10x more and spill registers). The interpreter
    (no inline PTX) takes tl.cos / tl.sin."""
    if FAST_TRIG:
        r = ph - 6.283185307179586 * tl.floor(ph * 0.15915494309189535 + 0.5)
        c = tl.inline_asm_elementwise("cos.approx.f32 $0, $1;", "=r,r", [r], dtype=tl.float32, is_pure=True, pack=1)
        s = tl.inline_asm_elementwise("sin.approx.f32 $0, $1;", "=r,r", [r], dtype=tl.float32, is_pure=True, pack=1)
        return c, s
    else:
        return tl.cos(ph), tl.sin(ph)


@triton.jit
def _exp2(x):
    """2^x: one special-function op on the GPU (flush-to-zero form: no denormal fix-up code)."""
    if FAST_TRIG:
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.exp2(x)


@triton.jit
def decay(dt, ar, ai, CPLX: tl.constexpr):
    """a = exp(dt * A) as (re, im) tiles (BN, BD). ``ar`` is Re(A) * log2(e) (the wrapper scales it),
    so the decay is one multiply and one exp2 per lane."""
    if CPLX:
        mag = _exp2(dt[None, :] * ar)
        c, s = _cos_sin(dt[None, :] * ai)
        return mag * c, mag * s
    else:
        a = _exp2(dt[None, :] * ar)
        return a, a


@triton.jit
def advance(hr, hi, a_r, a_i, dt, uu, br, bi, CPLX: tl.constexpr):
    """h <- a h + (dt u) B."""
    du = (dt * uu)[None, :]
    if CPLX:
        return a_r * hr - a_i * hi + du * br[:, None], a_r * hi + a_i * hr + du * bi[:, None]
    else:
        h = a_r * hr + du * br[:, None]
        return h, h


@triton.jit
def load_state(ptr, base, T2, mask, ND, CPLX: tl.constexpr):
    hr = tl.load(ptr + base + T2, mask=mask, other=0.0)
    if CPLX:
        hi = tl.load(ptr + base + ND + T2, mask=mask, other=0.0)
    else:
        hi = hr
    return hr, hi


@triton.jit
def store_state(ptr, base, T2, hr, hi, mask, ND, CPLX: tl.constexpr):
    tl.store(ptr + base + T2, hr, mask=mask)
    if CPLX:
        tl.store(ptr + base + ND + T2, hi, mask=mask)


@triton.jit
def prologue(A_ptr, bias_ptr, D_ptr, d, N, G, dpg, K, xz, BD: tl.constexpr, BN: tl.constexpr,
             CPLX: tl.constexpr, SCALAR_D: tl.constexpr, EVEN_N: tl.constexpr, HAS_BIAS: tl.constexpr,
             HAS_D: tl.constexpr):
    """What every scan program starts with: its batch row, channel block and time chunk (pid_b, blk, k:
    grid (b * d // BD, K)), channel/state indices, (BN, BD) A tiles, the group row of B/C, the planar state
    tile offsets, the chunk's (P, N, d) state slot kb, and its channels' delta bias and D (0 when absent).

    SCALAR_D: channel lanes are xor-ed with xz (always 0 at run time). The compiler then cannot prove
    them contiguous, so it gives each thread one channel and all its N states (no vector width along
    dim) instead of 4 channels x N/4 states: the per-channel work of a step (loads, softplus, gate,
    store) is then done once per channel rather than once per thread sharing that channel, and the
    sums over N stay inside a thread. Hardware still coalesces the lanes' neighbouring addresses."""
    nblk = d // BD
    pid_b = tl.program_id(0) // nblk
    blk = tl.program_id(0) % nblk
    k = tl.program_id(1)
    lane = tl.arange(0, BD)
    if SCALAR_D:
        lane = lane ^ xz
    dch = blk * BD + lane
    n = tl.arange(0, BN)
    zd = tl.zeros([BD], tl.int32)
    zn = tl.zeros([BN], tl.int32)
    # N == BN: an all-true mask the compiler sees as uniform, so a step's B/C load is one vector load
    if EVEN_N:
        nmask = zn == 0
    else:
        nmask = n < N
    m2 = nmask[:, None] & (dch < d)[None, :]
    T2 = n[:, None] * d + dch[None, :]  # (N, d) planes, d contiguous
    ND = N * d
    ar, ai = load_state(A_ptr, 0, T2, m2, ND, CPLX)  # A is passed as planar (re, [im]) x (N, d)
    bg = pid_b * G + (blk * BD) // dpg  # BD divides channels-per-group: one B/C group per program
    P = 2 if CPLX else 1
    kb = (pid_b * K + k).to(tl.int64) * (P * ND)  # this chunk's (P, N, d) state slot
    bias = tl.load(bias_ptr + dch).to(tl.float32) if HAS_BIAS else 0.0
    Dv = tl.load(D_ptr + dch).to(tl.float32) if HAS_D else 0.0
    return pid_b, blk, k, dch, n, nmask, m2, T2, ND, ar, ai, bg, zd, zn, kb, bias, Dv


@triton.jit
def scan_fwd_kernel(
    u_ptr, delta_ptr, z_ptr, b_ptr, c_ptr, A_ptr, D_ptr, bias_ptr,
    hstart_ptr, out_ptr, hend_ptr, dsum_ptr, last_ptr,
    d, L, N, G, dpg, K, Lc, xz, sz,
    LOCAL: tl.constexpr, HAS_Z: tl.constexpr, HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, CPLX: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr, BT: tl.constexpr,
    SCALAR_D: tl.constexpr, EVEN_N: tl.constexpr,
):
    """LOCAL: chunk end state from h=0 and sum(dt) -> hend, dsum.  Else: out + last state from hstart.
    z rows are ``sz`` elements apart (d for a (b, L, d) tensor; 2d for the z half of the block's xz)."""
    pid_b, blk, k, dch, n, nmask, m2, T2, ND, ar, ai, bg, zd, zn, kb, bias, Dv = prologue(
        A_ptr, bias_ptr, D_ptr, d, N, G, dpg, K, xz, BD, BN, CPLX, SCALAR_D, EVEN_N, HAS_BIAS, HAS_D)
    P = 2 if CPLX else 1
    if LOCAL:
        hr = tl.zeros([BN, BD], tl.float32)
        hi = tl.zeros([BN, BD], tl.float32)
    else:
        hr, hi = load_state(hstart_ptr, kb, T2, m2, ND, CPLX)
    dsum = tl.zeros([BD], tl.float32)
    t_start = k * Lc
    t_end = tl.minimum(L, t_start + Lc)
    for t0 in range(loop_bound(t_start), loop_bound(t_end), BT):
        for i in tl.static_range(BT):
            so, m, dt, sig, uu, br, bi, cr, ci = step_load(delta_ptr, u_ptr, b_ptr, c_ptr, pid_b, bg, t0 + i, t_end, L, d,
                                                          N, dch, n, nmask, zd, zn, bias, HAS_BIAS, SOFTPLUS, CPLX)
            a_r, a_i = decay(dt, ar, ai, CPLX)
            hr, hi = advance(hr, hi, a_r, a_i, dt, uu, br, bi, CPLX)
            if LOCAL:
                dsum += dt
            else:
                if CPLX:
                    y = 2.0 * tl.sum(hr * cr[:, None] - hi * ci[:, None], axis=0)
                else:
                    y = tl.sum(hr * cr[:, None], axis=0)
                if HAS_D:
                    y += Dv * uu
                if HAS_Z:
                    zo = (pid_b * L + t0 + i).to(tl.int64) * sz + dch
                    zz = tl.load(z_ptr + zo, mask=m, other=0.0).to(tl.float32)
                    y = y * zz * tl.sigmoid(zz)
                tl.store(out_ptr + so, y.to(out_ptr.dtype.element_ty), mask=m)
    if LOCAL:
        tl.store(dsum_ptr + (pid_b * K + k) * d + dch, dsum)
        store_state(hend_ptr, kb, T2, hr, hi, m2, ND, CPLX)
    elif k == K - 1:
        store_state(last_ptr, pid_b.to(tl.int64) * (P * ND), T2, hr, hi, m2, ND, CPLX)


@triton.jit
def combine_kernel(local_ptr, dsum_ptr, A_ptr, h0_ptr, carry_ptr, d, N, K,
                    REVERSE: tl.constexpr, CPLX: tl.constexpr, BD: tl.constexpr, BN: tl.constexpr):
    """Chain chunk states: carry[k] = h; h = P_k h + local[k], P_k = exp(A dsum_k) (conj, reversed k
    for the adjoint). Forward: h starts at h0 and carry[k] is chunk k's start state. Reverse: h starts
    at dL/dh_last and carry[k] is the gradient entering chunk k from its right."""
    nblk = d // BD
    pid_b = tl.program_id(0) // nblk
    blk = tl.program_id(0) % nblk
    dch = blk * BD + tl.arange(0, BD)
    n = tl.arange(0, BN)
    m2 = (n < N)[:, None] & (dch < d)[None, :]
    T2 = n[:, None] * d + dch[None, :]
    ND = N * d
    P = 2 if CPLX else 1
    ar, ai = load_state(A_ptr, 0, T2, m2, ND, CPLX)
    if REVERSE:
        ai = -ai
    hr, hi = load_state(h0_ptr, pid_b.to(tl.int64) * (P * ND), T2, m2, ND, CPLX)
    for j in range(loop_bound(K)):
        k = K - 1 - j if REVERSE else j
        kb = (pid_b * K + k).to(tl.int64) * (P * ND)
        store_state(carry_ptr, kb, T2, hr, hi, m2, ND, CPLX)
        ds = tl.load(dsum_ptr + (pid_b * K + k) * d + dch)
        p_r, p_i = decay(ds, ar, ai, CPLX)
        lr, li = load_state(local_ptr, kb, T2, m2, ND, CPLX)
        if CPLX:
            hr, hi = p_r * hr - p_i * hi + lr, p_r * hi + p_i * hr + li
        else:
            hr = p_r * hr + lr


@triton.jit
def transpose_kernel(src_ptr, dst_ptr, R, C, BR: tl.constexpr, BC: tl.constexpr):
    """dst[b, c, r] = src[b, r, c] for (batch, R, C) -> (batch, C, R); both sides coalesced (the
    compiler stages the tile through shared memory between the load and the store layouts)."""
    pid_b = tl.program_id(0)
    r = tl.program_id(1) * BR + tl.arange(0, BR)
    c = tl.program_id(2) * BC + tl.arange(0, BC)
    m = (r < R)[:, None] & (c < C)[None, :]
    base = pid_b.to(tl.int64) * R * C
    x = tl.load(src_ptr + base + r[:, None].to(tl.int64) * C + c[None, :], mask=m)
    tl.store(dst_ptr + base + c[None, :].to(tl.int64) * R + r[:, None], x, mask=m)
