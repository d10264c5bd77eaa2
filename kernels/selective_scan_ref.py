"""Pure-PyTorch selective scan: the CPU path and the oracle for the Triton kernels.

Two functions live here:

* ``selective_scan_naive`` — a float64-friendly per-step loop, the shortest possible statement of the
  recurrence. Tests use it as ground truth; nothing else should.
* ``scan_core_ref`` — the practical reference used by ``selective_scan(backend="reference")``. It is a
  ``torch.autograd.Function`` with a hand-written backward, organised so that it is fast on a CPU and
  bounded in memory for very long sequences:

  - the sequence is cut into *segments* whose (batch, dim, S, N) working set is bounded
    (``_SEGMENT_ELEMS``), so nothing of size (batch, dim, L, N) is ever allocated for long L;
  - inside a segment, the linear recurrence h_t = a_t h_{t-1} + x_t runs as a two-level chunked scan:
    a sequential loop over the T positions of a chunk, vectorised over all chunks at once, then a
    short loop that carries the state from chunk to chunk, then one fused correction
    h += cumprod(a) * carry. That is ~T + S/T Python-level steps instead of S, and — unlike the
    log-space cumsum trick — it never divides by a vanishing product, so it is stable for any decay;
  - the backward recomputes each segment's states from the segment's saved start state (one
    (batch, dim, N) tensor per segment) and runs the adjoint recurrence with the same chunked scan.

Conventions are mamba-ssm's ``selective_scan_fn``; shapes after normalisation by
``mambaseq.kernels.selective_scan``:

    u, delta: r(b d L) float32, delta already biased and softplus-ed
    A:        r(d N) or c(d N)
    B, C:     r(b g N L) or c(b g N L)      (g divides d; channel i uses group i // (d // g))
    h0:       r(b d N) or c(b d N)
    y:        r(b d L) = scale * Re(sum_n C h),   scale = 2 for complex A (mamba-ssm), else 1
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Elements of one (batch, dim, S, N) working buffer per segment. ~2^21 floats (8 MiB) keeps a handful of
# buffers inside L2+L3 on a laptop-class CPU; measured on the CI machine (bench/scan_cpu.py).
_SEGMENT_ELEMS = 1 << 21


def selective_scan_naive(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Step-by-step loop in the inputs' own precision (call it with float64 for an oracle).

    Takes already-normalised B/C: r/c(b g N L). Returns (out (b d L), last_state (b d N)).
    """
    b, d, L = u.shape
    n = A.shape[1]
    g = B.shape[1]
    delta = delta + delta_bias[:, None] if delta_bias is not None else delta
    if delta_softplus:
        delta = F.softplus(delta)
    Bc = B.repeat_interleave(d // g, dim=1)  # (b d N L)
    Cc = C.repeat_interleave(d // g, dim=1)
    h = initial_state if initial_state is not None else u.new_zeros(b, d, n, dtype=A.dtype)
    ys = []
    for t in range(L):
        a = torch.exp(delta[:, :, t, None] * A)
        h = a * h + (delta[:, :, t] * u[:, :, t])[..., None] * Bc[..., t]
        y = (h * Cc[..., t]).sum(-1)
        ys.append(2 * y.real if y.is_complex() else y)
    out = torch.stack(ys, dim=-1)
    if D is not None:
        out = out + D[:, None] * u
    if z is not None:
        out = out * F.silu(z)
    return out, h


# --------------------------------------------------------------------------------------------------
# Layout. Inside a segment of Sp = T * nc steps every big buffer is (b, d, N, T, nc): time step
# s = k*T + t lives at [..., t, k]. With time innermost, the broadcasts that build a = exp(delta A),
# x = delta u B and the readouts all run over long contiguous rows (a per-(d, n) scalar against a
# contiguous (T*nc) row), and the scan's step t touches one contiguous (nc)-row per state. Only the small
# (b, d, S) / (b, g, N, S) inputs and outputs are permuted into and out of this layout.
#
# All big tensors are preallocated workspace buffers used with in-place / out= ops: on a CPU a fresh
# multi-MiB allocation per op costs more in page faults than the arithmetic (measured on the CI machine:
# 8.4 ms for an out-of-place mul of 2^21 floats vs 1.8 ms with out=).


def _plan(b: int, d: int, n: int, L: int) -> tuple[int, int]:
    """Segment length S (a multiple of the chunk length T when L > S) and T."""
    S = max(1, min(L, _SEGMENT_ELEMS // max(1, b * d * n)))
    T = max(1, min(_MAX_T, S // 16))
    if L > S:  # every full segment a multiple of T, so only the last one is ever padded
        S = max(T, S // T * T)
    return S, T


_MAX_T = 8


def _perm(x: Tensor, T: int) -> Tensor:
    """(..., Sp) time-ordered -> (..., T, nc) view (not contiguous)."""
    return x.unflatten(-1, (-1, T)).transpose(-1, -2)


def _unperm(x: Tensor) -> Tensor:
    """(..., T, nc) -> (..., Sp) time-ordered."""
    return x.transpose(-1, -2).flatten(-2)


def _scan_inplace(a: Tensor, x: Tensor, h0: Tensor) -> None:
    """x <- h where h_s = a_s h_{s-1} + x_s over time s = k*T + t, h_{-1} = h0.  a is destroyed.

    a, x: (R, T, nc) contiguous;  h0: (R,).
    """
    R, T, nc = x.shape
    for t in range(1, T):  # local scans of all nc chunks at once
        x[:, t].addcmul_(a[:, t], x[:, t - 1])
        a[:, t].mul_(a[:, t - 1])  # a becomes the within-chunk cumulative product
    # carries chunk to chunk, on contiguous (nc, R) copies of the chunk-end values
    xe, ae = x[:, T - 1].t().contiguous(), a[:, T - 1].t().contiguous()
    carry = torch.empty(nc, R, dtype=x.dtype, device=x.device)
    c = h0
    for k in range(nc):
        carry[k] = c
        c = torch.addcmul(xe[k], ae[k], c)
    x.addcmul_(a, carry.t().contiguous().unsqueeze(1))


def _scan_reverse_inplace(a: Tensor, g: Tensor, g_end: Tensor) -> Tensor:
    """g <- G where G_s = g_s + a_{s+1} G_{s+1}, with a_S G_S := g_end.  a is destroyed.

    a, g: (R, T, nc) contiguous; g_end: (R,), the gradient flowing in from after the segment.
    Returns a_0 G_0, the gradient flowing into the state before the segment.
    """
    R, T, nc = g.shape
    for t in range(T - 2, -1, -1):  # local reverse scans of all chunks at once
        g[:, t].addcmul_(a[:, t + 1], g[:, t + 1])
    a_first = a[:, 0].t().contiguous()  # (nc, R) raw a at each chunk start, for the carries
    for t in range(T - 2, -1, -1):
        a[:, t].mul_(a[:, t + 1])  # a_t <- prod_{t' >= t} a_t'  (within the chunk)
    g0 = g[:, 0].t().contiguous()
    a1 = a[:, 1].t().contiguous() if T > 1 else None
    carry = torch.empty(nc, R, dtype=g.dtype, device=g.device)
    c = g_end
    for k in range(nc - 1, -1, -1):
        carry[k] = c  # gradient arriving at chunk k's last step from the future
        G0 = torch.addcmul(g0[k], a1[k], c) if T > 1 else g0[k] + c
        c = a_first[k] * G0
    carry = carry.t().contiguous().unsqueeze(1)
    if T > 1:
        g[:, : T - 1].addcmul_(a[:, 1:], carry)
    g[:, T - 1 :].add_(carry)
    return c


class _Workspace:
    """Reusable flat buffers; ``get(i, shape)`` views the first prod(shape) elements of buffer i."""

    def __init__(self, count: int, numel: int, dtype: torch.dtype, device: torch.device) -> None:
        self.bufs = [torch.empty(numel, dtype=dtype, device=device) for _ in range(count)]

    def get(self, i: int, shape: tuple[int, ...]) -> Tensor:
        return self.bufs[i][: math.prod(shape)].view(shape)


def _segment(t: Tensor, s0: int, s1: int, Sp: int, T: int) -> Tensor:
    """Time slice [s0, s1) of (..., L), zero-padded to Sp (delta = 0 gives a = 1, x = 0), as (..., T, nc)."""
    t = t[..., s0:s1]
    if s1 - s0 < Sp:
        t = torch.cat([t, t.new_zeros(*t.shape[:-1], Sp - (s1 - s0))], dim=-1)
    return _perm(t, T).contiguous()


def _decay_and_input(dl: Tensor, du: Tensor, A: Tensor, Bs: Tensor, a_out: Tensor, x_out: Tensor) -> None:
    """a = exp(delta A), x = delta u B into (b, d, N, T, nc) buffers. dl, du: (b d T nc); Bs: (b g N T nc)."""
    b, d, T, nc = dl.shape
    g, n = Bs.shape[1], Bs.shape[2]
    torch.mul(dl.unsqueeze(2), A.view(d, n, 1, 1), out=a_out)
    a_out.exp_()
    torch.mul(du.view(b, g, d // g, 1, T, nc), Bs.unsqueeze(2), out=x_out.view(b, g, d // g, n, T, nc))


class _ScanCore(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0):
        # u, delta: (b d L) fp32; A: (d N); B, C: (b g N L); h0: (b d N)
        b, d, L = u.shape
        n, g = A.shape[1], B.shape[1]
        scale = 2.0 if A.is_complex() else 1.0
        S, T = _plan(b, d, n, L)
        Smax = -(-min(S, L) // T) * T
        ws = _Workspace(3, b * d * n * Smax, A.dtype, u.device)
        y = u.new_empty(b, d, L)
        du_all = delta * u
        h = h0
        starts = []
        for s0 in range(0, L, S):
            s1 = min(L, s0 + S)
            ln = s1 - s0
            Sp = -(-ln // T) * T
            nc = Sp // T
            shp = (b, d, n, T, nc)
            a, hs, tmp = ws.get(0, shp), ws.get(1, shp), ws.get(2, shp)
            dl = _segment(delta, s0, s1, Sp, T)
            _decay_and_input(dl, _segment(du_all, s0, s1, Sp, T), A, _segment(B, s0, s1, Sp, T), a, hs)
            starts.append(h)
            _scan_inplace(a.view(-1, T, nc), hs.view(-1, T, nc), h.reshape(-1))
            Cs = _segment(C, s0, s1, Sp, T)
            torch.mul(hs.view(b, g, d // g, n, T, nc), Cs.unsqueeze(2), out=tmp.view(b, g, d // g, n, T, nc))
            ys = tmp.sum(2)
            ys = ys.real if ys.is_complex() else ys
            y[:, :, s0:s1] = _unperm(ys)[:, :, :ln] * scale if scale != 1.0 else _unperm(ys)[:, :, :ln]
            h = hs[:, :, :, (ln - 1) % T, (ln - 1) // T].clone()
        ctx.plan = (S, T)
        ctx.save_for_backward(u, delta, A, B, C, *starts)
        return y, h

    @staticmethod
    def backward(ctx, gy, gh_last):
        u, delta, A, B, C, *starts = ctx.saved_tensors
        b, d, L = u.shape
        n, g = A.shape[1], B.shape[1]
        dg = d // g
        S, T = ctx.plan
        cplx = A.is_complex()
        scale = 2.0 if cplx else 1.0
        gu, gdelta = torch.empty_like(u), torch.empty_like(delta)
        gB, gC = torch.empty_like(B), torch.empty_like(C)
        gA = torch.zeros_like(A)
        gy = (gy * scale).contiguous() if gy is not None else u.new_zeros(b, d, L)
        G = gh_last if gh_last is not None else torch.zeros_like(starts[0])
        Smax = -(-min(S, L) // T) * T
        ws = _Workspace(6, b * d * n * Smax, A.dtype, u.device)
        Aconj = A.conj().view(d, n, 1, 1)
        du_all = delta * u
        for i in range((L + S - 1) // S - 1, -1, -1):
            s0, s1 = i * S, min(L, (i + 1) * S)
            ln = s1 - s0
            Sp = -(-ln // T) * T
            nc = Sp // T
            shp = (b, d, n, T, nc)
            shp6 = (b, g, dg, n, T, nc)
            a, ac, x, h, gh, tmp = (ws.get(k, shp) for k in range(6))
            dl, du = _segment(delta, s0, s1, Sp, T), _segment(du_all, s0, s1, Sp, T)
            Bs, Cs, gys = _segment(B, s0, s1, Sp, T), _segment(C, s0, s1, Sp, T), _segment(gy, s0, s1, Sp, T)
            # recompute the segment's states from its saved start state
            _decay_and_input(dl, du, A, Bs, a, x)
            torch.conj_physical(a, out=ac)  # the adjoint recurrence runs with conj(a)
            h.copy_(x)
            _scan_inplace(a.view(-1, T, nc), h.view(-1, T, nc), starts[i].reshape(-1))
            # dL/dh from the readout, then the adjoint recurrence
            torch.mul(gys.view(b, g, dg, 1, T, nc), Cs.conj().unsqueeze(2), out=gh.view(shp6))
            G = _scan_reverse_inplace(ac.view(-1, T, nc), gh.view(-1, T, nc), G.reshape(-1)).view(b, d, n)
            # W_s = G_s * conj(a_s h_{s-1}) = G_s * conj(h_s - x_s)   (in x's buffer)
            W = torch.sub(h, x, out=x)
            if cplx:
                W.conj_physical_()
            W.mul_(gh)
            gA += torch.mul(W, dl.unsqueeze(2), out=tmp).sum((0, 3, 4))
            torch.mul(W, Aconj, out=tmp)
            gdl = (tmp.real if cplx else tmp).sum(2)  # (b d T nc)
            # Q_s = Re(sum_n G_s,n conj(B_s,n)):  du = Q delta,  d(delta) += Q u
            torch.mul(gh.view(shp6), Bs.conj().unsqueeze(2), out=tmp.view(shp6))
            Q = (tmp.real if cplx else tmp).sum(2)  # (b d T nc)
            gu[:, :, s0:s1] = _unperm(dl * Q)[:, :, :ln]
            gdelta[:, :, s0:s1] = _unperm(gdl.addcmul_(_segment(u, s0, s1, Sp, T), Q))[:, :, :ln]
            gB[..., s0:s1] = _unperm(torch.mul(gh.view(shp6), du.view(b, g, dg, 1, T, nc), out=tmp.view(shp6)).sum(2))[
                ..., :ln
            ]
            hc = h.view(shp6).conj()
            gC[..., s0:s1] = _unperm(torch.mul(hc, gys.view(b, g, dg, 1, T, nc), out=tmp.view(shp6)).sum(2))[..., :ln]
        return gu, gdelta, gA, gB, gC, G


def scan_core_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor):
    """y = scale*Re(C . h), last state — see module docstring. B, C: (b g N L)."""
    return _ScanCore.apply(u, delta, A, B, C, h0)
