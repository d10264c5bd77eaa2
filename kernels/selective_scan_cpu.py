"""The selective scan's CPU path: ``selective_scan(..., backend="reference")``, a PyTorch implementation
built to be used (its oracle, the short per-step loop, is ``selective_scan_ref.py``).

* ``selective_scan_cpu`` — the whole op on normalised inputs: step sizes (bias, softplus), the scan core,
  the D skip and the SiLU(z) gate, in fp32 (fp64 for fp64 inputs).
* ``scan_core_cpu`` — the recurrence itself: a ``torch.autograd.Function`` with a hand-written backward,
  organised so that it is fast on a CPU and bounded in memory for very long sequences:

  - the sequence is cut into *segments* whose working set is bounded (``SEGMENT_ELEMS``), so nothing of
    size (batch, dim, L, N) is ever allocated for long L, and the buffers stay in cache;
  - inside a segment the linear recurrence h_t = a_t h_{t-1} + x_t runs either as a plain loop over
    time (wide problems: one op per step over all batch*dim*N lanes) or, for narrow ones, as a
    two-level chunked scan: a loop over the T positions of a chunk vectorised over all chunks, a short
    chunk-to-chunk carry loop, and one fused correction h += cumprod(a) * carry. Unlike the log-space
    cumsum trick it never divides by a vanishing product, so it is stable for any decay;
  - the backward recomputes each segment's states from the segment's saved start state (one
    (batch, dim, N) tensor per segment) and runs the adjoint recurrence with the same scan.

Conventions are mamba-ssm's ``selective_scan_fn``; shapes after normalisation by
``mambaseq.kernels.selective_scan``:

    u, delta: r(b d L) float32 (float64 for checks), delta already biased and softplus-ed (core)
    A:        r(d N) or c(d N)
    B, C:     r(b g N L) or c(b g N L)      (g divides d; channel i uses group i // (d // g))
    h0:       r(b d N) or c(b d N)
    y:        r(b d L) = scale * Re(sum_n C h),   scale = 2 for complex A (mamba-ssm), else 1
"""

from __future__ import annotations

import torch
from torch import Tensor

from .selective_scan_ref import ssm_output, ssm_step_sizes

# Tunables (module attributes, read at every call; the tests lower them to force several segments or the
# plain loop). Elements of one (S, b, N, d) working buffer per segment: 2^19 floats (2 MiB) keeps the six
# backward buffers inside the L3 cache of the CI machine (a sweep of 2^17..2^22 on the LM benchmark,
# bench_cpu.py, was fastest at 2^18..2^19).
SEGMENT_ELEMS = 1 << 19


# --------------------------------------------------------------------------------------------------
# Layout. Inside a segment of Sp = T * nc steps every big buffer is time-major, (T, nc, b, d, N): time
# step s = k*T + t lives at [t, k]. Then the scan's step t is one contiguous (nc, b*d*N) block, the
# chunk-to-chunk carry touches contiguous (b*d*N) rows, and the broadcasts that build a = exp(delta A),
# x = delta u B and the readouts are plain row-wise products. Only the small (b, d, S) / (b, g, N, S)
# inputs and outputs are permuted into and out of this layout.
#
# All big tensors are preallocated workspace buffers used with in-place / out= ops: on a CPU a fresh
# multi-MiB allocation per op costs more in page faults than the arithmetic (measured on the CI machine:
# 8.4 ms for an out-of-place mul of 2^21 floats vs 1.8 ms with out=).

MIN_ROW = 1 << 15  # lanes per scan step below which chunks are scanned side by side (see _plan)


def _plan(b: int, d: int, n: int, L: int) -> tuple[int, int, int]:
    """Segment length S = T * nc, chunk length T, and the number of segments.

    A scan step is one op over nc * b*d*N elements. When b*d*N alone is large enough to hide Python's
    per-op cost (>= MIN_ROW), nc = 1: a plain sequential loop, the fewest memory passes. Otherwise nc
    chunks are scanned side by side and stitched together with their carries.
    """
    R = max(1, b * d * n)
    S = max(1, min(L, SEGMENT_ELEMS // R))
    nc = min(S, -(-MIN_ROW // R))
    T = -(-S // nc)
    return T * nc, T, -(-L // (T * nc))


def _to_time_major(x: Tensor, S: int, T: int, nseg: int) -> Tensor:
    """(..., L) -> (nseg, T, nc, ...) contiguous, zero-padded to nseg*S steps (delta = 0 there gives
    a = 1, x = 0: the state passes through the padding unchanged). Step s = i*S + k*T + t is [i, t, k]."""
    L = x.shape[-1]
    if nseg * S > L:
        x = torch.cat([x, x.new_zeros(*x.shape[:-1], nseg * S - L)], dim=-1)
    x = x.unflatten(-1, (nseg, S // T, T))  # (..., nseg, nc, T)
    k = x.dim()
    return x.permute(k - 3, k - 1, k - 2, *range(k - 3)).contiguous()


def _from_time_major(x: Tensor, L: int) -> Tensor:
    """(nseg, T, nc, ...) -> (..., L) time-ordered (drops the padding)."""
    k = x.dim()
    return x.permute(*range(3, k), 0, 2, 1).flatten(-3)[..., :L]


def _scan_inplace(a: Tensor, x: Tensor, h0: Tensor) -> None:
    """x <- h where h_s = a_s h_{s-1} + x_s over time s = k*T + t, h_{-1} = h0.  a is destroyed.

    a, x: (T, nc, R) contiguous;  h0: (R,).  With nc == 1, a is left intact.
    """
    T, nc, R = x.shape
    xs, as_ = x.unbind(0), a.unbind(0)  # all step views in one call (indexing per step costs ~us each)
    if nc == 1:  # plain sequential scan
        xs[0].addcmul_(as_[0], h0)
        for t in range(1, T):
            xs[t].addcmul_(as_[t], xs[t - 1])
        return
    for t in range(1, T):  # local scans of all nc chunks at once
        xs[t].addcmul_(as_[t], xs[t - 1])
        as_[t].mul_(as_[t - 1])  # a becomes the within-chunk cumulative product
    carry = torch.empty(nc, R, dtype=x.dtype, device=x.device)
    c = h0
    for k in range(nc):  # chunk to chunk
        carry[k] = c
        c = torch.addcmul(x[T - 1, k], a[T - 1, k], c)
    x.addcmul_(a, carry.unsqueeze(0))


def _scan_reverse_inplace(a: Tensor, g: Tensor, g_end: Tensor) -> Tensor:
    """g <- G where G_s = g_s + a_{s+1} G_{s+1}, with a_S G_S := g_end.  a is destroyed.

    a, g: (T, nc, R) contiguous; g_end: (R,), the gradient flowing in from after the segment.
    Returns a_0 G_0, the gradient flowing into the state before the segment.
    """
    T, nc, R = g.shape
    gs, as_ = g.unbind(0), a.unbind(0)
    if nc == 1:  # plain sequential scan
        gs[T - 1].add_(g_end)
        for t in range(T - 2, -1, -1):
            gs[t].addcmul_(as_[t + 1], gs[t + 1])
        return as_[0] * gs[0]
    for t in range(T - 2, -1, -1):  # local reverse scans of all chunks at once
        gs[t].addcmul_(as_[t + 1], gs[t + 1])
    a_first = a[0].clone()  # raw a at each chunk start, needed for the carries
    for t in range(T - 2, -1, -1):
        as_[t].mul_(as_[t + 1])  # a_t <- prod_{t' >= t} a_t'  (within the chunk)
    carry = torch.empty(nc, R, dtype=g.dtype, device=g.device)
    c = g_end
    for k in range(nc - 1, -1, -1):
        carry[k] = c  # gradient arriving at chunk k's last step from the future
        G0 = torch.addcmul(g[0, k], a[1, k], c) if T > 1 else g[0, k] + c
        c = a_first[k] * G0
    if T > 1:
        g[: T - 1].addcmul_(a[1:], carry.unsqueeze(0))
    g[T - 1].add_(carry)
    return c


def _decay_and_input(dl: Tensor, du: Tensor, At: Tensor, Bs: Tensor, a_out: Tensor, x_out: Tensor) -> None:
    """a = exp(delta A), x = delta u B into (T, nc, b, N, d) buffers.

    dl, du: (T nc b d);  At: A transposed, (N d), times log2(e) when real (see ``_decay_exponent``);
    Bs: (T nc b N g).
    """
    T, nc, b, d = dl.shape
    n, g = Bs.shape[3], Bs.shape[4]
    torch.mul(dl.unsqueeze(3), At, out=a_out)
    if a_out.is_complex():
        a_out.exp_()
    else:  # At is pre-scaled by log2(e): exp2 is ~2.5x cheaper than exp on a CPU (measured on the CI VM)
        a_out.exp2_()
    torch.mul(du.view(T, nc, b, 1, g, d // g), Bs.unsqueeze(-1), out=x_out.view(T, nc, b, n, g, d // g))


def _sum_over_channels(X: Tensor, v: Tensor, g: int, out: Tensor) -> Tensor:
    """sum_c X[..., n, c] v[..., c] within each group: X (T nc b N d), v (T nc b d) -> (T nc b N g).
    ``out`` is a (T nc b N d) scratch buffer. (A contiguous row reduction beats a batched matvec here.)"""
    T, nc, b, n, d = X.shape
    prod = torch.mul(X.view(T, nc, b, n, g, d // g), v.view(T, nc, b, 1, g, d // g), out=out.view(T, nc, b, n, g, -1))
    return prod.sum(-1)


_LOG2E = 1.4426950408889634


def _decay_exponent(A: Tensor) -> Tensor:
    """A transposed to (N, d) as ``_decay_and_input`` wants it: real A scaled by log2(e) for exp2."""
    At = A.t().contiguous()
    return At if At.is_complex() else At * _LOG2E


class _ScanCore(torch.autograd.Function):
    """Internally the state is laid out (b, N, d) so that sums over N run across contiguous d-rows."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0):
        # u, delta: (b d L) fp32; A: (d N); B, C: (b g N L); h0: (b d N)
        b, d, L = u.shape
        n, g = A.shape[1], B.shape[1]
        dg = d // g
        S, T, nseg = _plan(b, d, n, L)
        nc = S // T
        shp, shp6 = (T, nc, b, n, d), (T, nc, b, n, g, dg)
        # every segment has the same (padded) shape, so its buffers are allocated once and reused
        ws = [u.new_empty(shp, dtype=A.dtype) for _ in range(3)]
        At = _decay_exponent(A)
        dl_tm, du_tm = _to_time_major(delta, S, T, nseg), _to_time_major(delta * u, S, T, nseg)
        B_tm, C_tm = _to_time_major(B.transpose(1, 2), S, T, nseg), _to_time_major(C.transpose(1, 2), S, T, nseg)
        y_tm = u.new_empty(nseg, T, nc, b, d)
        matvec = g == 1 and not A.is_complex()
        h = h0.transpose(1, 2).contiguous()  # (b N d)
        starts = []
        for i in range(nseg):
            a, hs, tmp = ws
            _decay_and_input(dl_tm[i], du_tm[i], At, B_tm[i], a, hs)
            starts.append(h)
            _scan_inplace(a.view(T, nc, -1), hs.view(T, nc, -1), h.view(-1))
            if matvec:  # y = C . h as one batched (1 x N) @ (N x d) product: no product buffer to write
                torch.bmm(C_tm[i].view(-1, 1, n), hs.view(-1, n, d), out=y_tm[i].view(-1, 1, d))
            else:
                ys = torch.mul(hs.view(shp6), C_tm[i].unsqueeze(-1), out=tmp.view(shp6)).sum(3)  # (T nc b g dg)
                y_tm[i] = (ys.real if ys.is_complex() else ys).view(T, nc, b, d)
            last = min(S, L - i * S) - 1  # the final segment's padding leaves the state unchanged anyway
            h = hs[last % T, last // T].clone()
        if A.is_complex():
            y_tm *= 2.0
        ctx.plan = (S, T, nseg)
        ctx.save_for_backward(u, delta, A, B, C, *starts)
        return _from_time_major(y_tm, L), h.transpose(1, 2)

    @staticmethod
    def backward(ctx, gy, gh_last):
        u, delta, A, B, C, *starts = ctx.saved_tensors
        b, d, L = u.shape
        n, g = A.shape[1], B.shape[1]
        dg = d // g
        S, T, nseg = ctx.plan
        nc = S // T
        shp, shp6 = (T, nc, b, n, d), (T, nc, b, n, g, dg)
        cplx = A.is_complex()
        gy = gy * 2.0 if cplx else gy
        G = gh_last.transpose(1, 2).contiguous() if gh_last is not None else torch.zeros_like(starts[0])
        ws = [u.new_empty(shp, dtype=A.dtype) for _ in range(6)]
        At = _decay_exponent(A)
        Atc = A.t().contiguous().conj()
        dl_tm, u_tm = _to_time_major(delta, S, T, nseg), _to_time_major(u, S, T, nseg)
        du_tm = dl_tm * u_tm
        B_tm, C_tm = _to_time_major(B.transpose(1, 2), S, T, nseg), _to_time_major(C.transpose(1, 2), S, T, nseg)
        gy_tm = _to_time_major(gy, S, T, nseg)
        gu_tm, gdl_tm = torch.empty_like(dl_tm), torch.empty_like(dl_tm)
        gB_tm, gC_tm = torch.empty_like(B_tm), torch.empty_like(C_tm)  # (nseg T nc b N g)
        gAt = torch.zeros_like(At)
        for i in range(nseg - 1, -1, -1):
            a, ac, x, h, gh, tmp = ws
            dl, du, Bs = dl_tm[i], du_tm[i], B_tm[i]
            # recompute the segment's states from its saved start state (cheaper on a CPU than keeping
            # a (L, b, N, d) history: that buffer lives in DRAM and is page-faulted in every step)
            _decay_and_input(dl, du, At, Bs, a, x)
            if cplx or nc > 1:  # the adjoint recurrence runs with conj(a); chunked scans consume a
                torch.conj_physical(a, out=ac)
            else:  # real, plain loops: neither scan modifies a
                ac = a
            h.copy_(x)
            _scan_inplace(a.view(T, nc, -1), h.view(T, nc, -1), starts[i].view(-1))
            # dL/dh from the readout, then the adjoint recurrence
            gys = gy_tm[i]
            torch.mul(gys.view(T, nc, b, 1, g, dg), C_tm[i].conj().unsqueeze(-1), out=gh.view(shp6))
            G = _scan_reverse_inplace(ac.view(T, nc, -1), gh.view(T, nc, -1), G.view(-1)).view(b, n, d)
            # W_s = G_s * conj(a_s h_{s-1}) = G_s * conj(h_s - x_s)   (in x's buffer)
            W = torch.sub(h, x, out=x)
            if cplx:
                W.conj_physical_()
            W.mul_(gh)
            gAt += torch.mul(W, dl.unsqueeze(3), out=tmp).sum((0, 1, 2))
            torch.mul(W, Atc, out=tmp)
            gdl = (tmp.real if cplx else tmp).sum(3)  # (T nc b d)
            # Q_s = Re(sum_n G_s,n conj(B_s,n)):  du = Q delta,  d(delta) += Q u
            if g == 1 and not cplx:
                Q = torch.bmm(Bs.view(-1, 1, n), gh.view(-1, n, d)).view(T, nc, b, d)
            else:
                torch.mul(gh.view(shp6), Bs.conj().unsqueeze(-1), out=tmp.view(shp6))
                Q = (tmp.real if cplx else tmp).sum(3).view(T, nc, b, d)
            torch.mul(dl, Q, out=gu_tm[i])
            torch.addcmul(gdl, u_tm[i], Q, out=gdl_tm[i])
            gB_tm[i] = _sum_over_channels(gh, du, g, tmp)
            gC_tm[i] = _sum_over_channels(h.conj(), gys, g, tmp)
        gB = _from_time_major(gB_tm, L).transpose(1, 2)
        gC = _from_time_major(gC_tm, L).transpose(1, 2)
        return (_from_time_major(gu_tm, L), _from_time_major(gdl_tm, L), gAt.t(), gB, gC, G.transpose(1, 2))


def scan_core_cpu(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
    """The recurrence on normalised inputs (module docstring): u, delta r(b d L) (delta final), A (d N),
    B, C (b g N L), h0 (b d N), all in the compute dtype (real or complex). Returns y r(b d L) =
    scale * Re(C . h) and the last state (b d N). Differentiable in every input."""
    return _ScanCore.apply(u, delta, A, B, C, h0)


def selective_scan_cpu(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                       z: Tensor | None, delta_bias: Tensor | None, delta_softplus: bool,
                       initial_state: Tensor | None) -> tuple[Tensor, Tensor]:
    """``selective_scan(..., backend="reference")`` on inputs it has validated and normalised (B, C as
    (b g N L), complex for complex A): fp32 state (fp64 for fp64 u), autograd through ``scan_core_cpu``.
    Returns out (b d L) in u's dtype and the last state (b d N) float32 / complex64 (64-bit for fp64)."""
    b, d, L = u.shape
    n = A.shape[1]
    ft = torch.float64 if u.dtype == torch.float64 else torch.float32
    ct = torch.complex128 if ft == torch.float64 else torch.complex64
    sdt = ct if A.is_complex() else ft
    uf = u.to(ft)
    dt = ssm_step_sizes(delta.to(ft), None if delta_bias is None else delta_bias.to(ft), delta_softplus)
    h0 = initial_state.to(sdt) if initial_state is not None else uf.new_zeros(b, d, n, dtype=sdt)
    y, last = scan_core_cpu(uf, dt, A.to(sdt), B.to(sdt), C.to(sdt), h0)
    y = ssm_output(y, uf, None if D is None else D.to(ft), None if z is None else z.to(ft))
    return y.to(u.dtype), last
