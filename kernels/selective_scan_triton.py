"""Fused Triton selective scan: autograd wrapper, block/chunk planning and kernel launches.

Called by ``mambaseq.kernels.selective_scan(..., backend="triton")`` with normalised inputs; the
kernels and the reasons for their design are in ``selective_scan_triton_kernels.py``. Nothing of size
(batch, dim, L, N) is allocated: the forward saves only the chunk start states (batch, dim, K, N), and
the backward re-runs the recurrence from them (plus a transient checkpoint every BT steps).
"""

from __future__ import annotations

import math

import torch
import triton
from torch import Tensor

from .backend import num_sms, triton_interpret
from .selective_scan_triton_bwd import scan_bwd_kernel
from .selective_scan_triton_kernels import combine_kernel, scan_fwd_kernel, transpose_kernel

# Launch parameters; None = the heuristics in _plan. The benchmark's --sweep overrides them to tune.
TUNE: dict[str, int | None] = {
    "bt": 4,  # time steps unrolled per inner block, forward (4 measured best, H100)
    "bt_b": 4,  # backward: steps held in registers per sub-chunk (and checkpoint spacing)
    "min_chunk": 512,  # shortest time chunk worth an extra local pass on the GPU
    # forward programs per SM from which time is not chunked (chunking costs a second, local pass). The
    # real forward is latency-bound with one warp per program: at (8, 4096, 2048), 3.9 programs/SM,
    # chunking into K=4 took it from 2.81 to 1.91 ms (H100 sweep); the complex one does ~3x the work
    # per step and got slower when chunked (4.03 -> 4.65 ms), so it keeps the old threshold.
    "k1_min": 8, "k1_min_cplx": 3,
    "waves": 16,  # programs per SM the chunking aims for
    "scalar_d": 0,  # 1: one channel per thread (see prologue in the kernels); measured slower
    "tile_f": 1024, "tile_b": 512, "tile_b_cplx": 256,  # BD*BN elements per program, forward / backward
    # One warp a program: the (N, BD) tile then never spans warps, so the per-step sums over N and
    # over channels are in-thread + shuffles, never a shared-memory round trip with a barrier.
    "wf": 1, "wb": 1, "bd_f": None, "bd_b": None,
    # The backward keeps its own chunking rule: it re-runs from the forward's chunk start states only
    # where it needs the parallelism itself (fewer than k1_min_b programs per SM), else from h0 alone.
    "k1_min_b": 3,
}


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def _plan(b: int, d: int, L: int, dpg: int, N: int, cplx: bool, device: torch.device, chunk_len: int | None):
    """Block sizes and time chunking: (BN, BD_fwd, BD_bwd, (BT_fwd, BT_bwd), Lc, K, warps_fwd, warps_bwd,
    bwd_whole). bwd_whole: the backward runs unchunked (K = 1, from h0) although the forward is chunked."""
    BN = _next_pow2(N)
    forced = chunk_len is not None  # tests force chunking: then the backward is chunked too
    pow2_div = dpg & -dpg  # a program's channels must lie in one group of B/C
    interp = device.type != "cuda" or triton_interpret()
    if interp:  # the interpreter runs each op on whole blocks: few, wide programs are fastest
        bd_f = bd_b = min(pow2_div, 64)
    else:
        bd_f = min(pow2_div, TUNE["bd_f"] or max(1, TUNE["tile_f"] // BN))
        bd_b = min(pow2_div, TUNE["bd_b"] or max(1, TUNE["tile_b_cplx" if cplx else "tile_b"] // BN))
    BT = (TUNE["bt"], TUNE["bt_b"])
    if chunk_len is None:
        if interp:
            chunk_len = L
        else:
            sms, progs = num_sms(device.index or 0), b * (d // bd_f)
            k1 = TUNE["k1_min_cplx" if cplx else "k1_min"]
            K = 1 if progs >= k1 * sms else -(-TUNE["waves"] * sms // progs)
            K = min(K, max(1, L // TUNE["min_chunk"]))
            chunk_len = -(-L // max(1, K))
    step = max(BT)  # both are powers of two: chunks start on forward and backward block edges
    Lc = -(-max(1, chunk_len) // step) * step
    K = -(-L // Lc)
    wf = 4 if interp else TUNE["wf"]
    wb = 4 if interp else TUNE["wb"]
    bwd_whole = (K > 1 and not interp and not forced
                 and b * (d // bd_b) >= TUNE["k1_min_b"] * num_sms(device.index or 0))
    return BN, bd_f, bd_b, BT, Lc, K, wf, wb, bwd_whole


def _swap(x: Tensor) -> Tensor:
    """Contiguous (b, R, C) -> contiguous (b, C, R) with a tiled Triton transpose (torch's strided
    copy runs at a fraction of the bandwidth for these shapes: measured 25 ms for (1, 256, 2^20))."""
    b, R, C = x.shape
    out = torch.empty((b, C, R), device=x.device, dtype=x.dtype)
    if x.numel():
        transpose_kernel[(b, triton.cdiv(R, 64), triton.cdiv(C, 64))](x, out, R, C, BR=64, BC=64, num_warps=4)
    return out


def _time_major(x: Tensor | None) -> Tensor | None:
    """(b, d, L) -> contiguous (b, L, d); free when x is already a transposed time-major tensor."""
    if x is None:
        return None
    xt = x.transpose(1, 2)
    if xt.is_contiguous():
        return xt
    return _swap(x.contiguous()) if x.device.type == "cuda" else xt.contiguous()


def _bc(x: Tensor) -> Tensor:
    """B/C (b, g, N, L) -> time-major float32 (b, g, L, N) [, 2 for complex (re, im)]. float32 so a
    step's N values are one vector load and no per-element conversion (B/C are small: no d axis)."""
    xt = x.transpose(-1, -2)
    return torch.view_as_real(xt.to(torch.complex64).contiguous()) if x.is_complex() else xt.float().contiguous()


def _planes(x: Tensor) -> Tensor:
    """(.., dim, N) real/complex -> planar float32 (.., [re, im], N, dim) as the kernels keep states."""
    xt = x.transpose(-1, -2)
    if x.is_complex():
        return torch.stack([xt.real, xt.imag], dim=-3).float().contiguous()
    return xt.float().unsqueeze(-3).contiguous()


def _unplanes(x: Tensor, cplx: bool) -> Tensor:
    """Inverse of ``_planes``: (.., [2,] N, dim) -> (.., dim, N), complex64 if cplx."""
    x = torch.complex(x.select(-3, 0), x.select(-3, 1)) if cplx else x.select(-3, 0)
    return x.transpose(-1, -2).contiguous()


def _chain_chunks(local: Tensor, dsum: Tensor, A_: Tensor, start: Tensor, reverse: bool, BN: int) -> Tensor:
    """Chain K time chunks run in parallel from zero: local (b, K, P, N, d) holds each chunk's own end state
    (forward) or outgoing adjoint (reverse), dsum (b, K, d) its total step size. Returns each chunk's carry,
    same shape: forward, its true start state from h0 = ``start`` (b, P, N, d); reverse, the gradient
    entering it from its right, from dL/dh_last = ``start``."""
    b, K, P, N, d = local.shape
    carry = torch.empty_like(local)
    cb = min(64, d & -d)
    combine_kernel[(b * (d // cb),)](local, dsum, A_, start, carry, d, N, K, REVERSE=reverse, CPLX=P == 2, BD=cb,
                                     BN=BN)
    return carry


def _row_stride(z_: Tensor | None, d: int) -> int:
    """Elements between consecutive (batch, t) rows of a time-major z (the kernels index row b*L + t).
    With L = 1 the time stride is meaningless (PyTorch calls any size-1 stride contiguous): the batch
    stride is the row stride then."""
    if z_ is None:
        return d
    b, L, _ = z_.shape
    if z_.stride(2) != 1 or (L > 1 and b > 1 and z_.stride(0) != L * z_.stride(1)):
        raise ValueError(f"z must be time-major with unit channel stride and evenly spaced rows; strides {z_.stride()}")
    return z_.stride(1) if L > 1 else z_.stride(0)


def scan_forward(u_: Tensor, dl_: Tensor, z_: Tensor | None, A: Tensor, B_: Tensor, C_: Tensor,
                 D: Tensor | None, delta_bias: Tensor | None, h0: Tensor | None, softplus: bool,
                 chunk_len: int | None = None) -> tuple[Tensor, Tensor, tuple]:
    """Launch the forward on time-major inputs (no layout work here).

    u_, dl_: (b, L, d) contiguous;  z_: (b, L, d) with unit channel stride, rows ``z_.stride(1)`` apart (the z
    half of the Mamba block's (b, L, 2d) in_proj output is used in place), or None;  A: (d, N) float32 or
    complex64;  B_, C_: ``_bc`` layout (b, G, L, N[, 2]) float32;  D, delta_bias: (d,) or None;  h0: (b, d, N)
    or None. Returns out (b, L, d) in u_'s dtype, the last state (b, d, N) float32 / complex64, and what
    ``scan_backward`` needs (A_, D_, bias_, hstart, dsum, cfg)."""
    b, L, d = u_.shape
    N = A.shape[1]
    G = B_.shape[1]
    cplx = A.is_complex()
    dev = u_.device
    BN, bd_f, bd_b, BT, Lc, K, wf, wb, bwd_whole = _plan(b, d, L, d // G, N, cplx, dev, chunk_len)
    A_ = _planes(A)  # kernels compute exp(dt A) as exp2(dt A log2 e): scale Re(A), out of place
    A_ = A_ * A_.new_tensor([math.log2(math.e), 1.0][: A_.shape[0]]).view(-1, 1, 1)
    D_ = None if D is None else D.float().contiguous()
    bias_ = None if delta_bias is None else delta_bias.float().contiguous()
    P = 2 if cplx else 1
    f32 = dict(device=dev, dtype=torch.float32)
    h0_ = _planes(h0) if h0 is not None else torch.zeros((b, P, N, d), **f32)
    out = torch.empty_like(u_)
    last = torch.empty((b, P, N, d), **f32)
    sz = _row_stride(z_, d)
    flags = dict(HAS_Z=z_ is not None, HAS_D=D is not None, HAS_BIAS=delta_bias is not None,
                 SOFTPLUS=bool(softplus), CPLX=cplx, BN=BN, SCALAR_D=bool(TUNE["scalar_d"]), EVEN_N=N == BN)
    dummy = out  # stands in for absent optional pointers (never dereferenced)
    kshape = (b, K, P, N, d)
    if K > 1:
        hend = torch.empty(kshape, **f32)
        dsum = torch.empty((b, K, d), **f32)
        scan_fwd_kernel[(b * (d // bd_f), K)](
            u_, dl_, dummy, B_, C_, A_, dummy, bias_ if bias_ is not None else dummy,
            dummy, dummy, hend, dsum, dummy, d, L, N, G, d // G, K, Lc, 0, sz,
            LOCAL=True, BD=bd_f, BT=BT[0], num_warps=wf, **flags)
        hstart = _chain_chunks(hend, dsum, A_, h0_, reverse=False, BN=BN)
    else:
        hstart, dsum = h0_, None
    scan_fwd_kernel[(b * (d // bd_f), K)](
        u_, dl_, z_ if z_ is not None else dummy, B_, C_, A_, D_ if D_ is not None else dummy,
        bias_ if bias_ is not None else dummy, hstart, out, dummy, dummy, last,
        d, L, N, G, d // G, K, Lc, 0, sz, LOCAL=False, BD=bd_f, BT=BT[0], num_warps=wf, **flags)
    if bwd_whole:  # chunk 0 starts from h0: all an unchunked backward needs
        hstart, dsum, K = hstart[:, :1].contiguous(), None, 1
        Lc = -(-L // BT[1]) * BT[1]
    cfg = (b, d, L, N, G, cplx, BN, bd_b, BT, Lc, K, wb, flags)
    return out, _unplanes(last, cplx), (A_, D_, bias_, hstart, dsum, cfg)


def scan_backward(saved: tuple, u_: Tensor, dl_: Tensor, z_: Tensor | None, B_: Tensor, C_: Tensor,
                  dout_: Tensor | None, dlast: Tensor | None, *, dz_: Tensor | None = None,
                  yz: Tensor | None = None, ddelta_: Tensor | None = None) -> tuple:
    """Launch the backward for ``scan_forward``'s ``saved``, on the same time-major inputs.

    dout_: (b, L, d) contiguous or None;  dlast: (b, d, N) or None.  dz_: where dz goes, (b, L, d) with unit
    channel stride and the same row stride as z_ (default: a new contiguous tensor).  yz: if given, a
    (b, L, d) contiguous tensor that receives the gated output y * silu(z), recomputed (needs z_).
    ddelta_: where ddelta goes (default: a new tensor). In place is allowed for both: yz may be dout_ and
    ddelta_ may be dl_ (each element is read by its one program before that program writes it there).
    Returns du, ddelta (b, L, d); dz or None; dB, dC summed partials (b, G, L, N[, 2]) float32 (re, im last);
    dA (d, N); dD, ddelta_bias (d,) or None; dh0 planar (b, P, N, d)."""
    A_, D_, bias_, hstart, dsum, cfg = saved
    b, d, L, N, G, cplx, BN, BD, BT, Lc, K, wb, flags = cfg
    dev = u_.device
    f32 = dict(device=dev, dtype=torch.float32)
    P = 2 if cplx else 1
    kshape = (b, K, P, N, d)
    dout_ = torch.zeros_like(u_) if dout_ is None else dout_
    dlast_ = torch.zeros((b, P, N, d), **f32) if dlast is None else _planes(dlast)
    sz = _row_stride(z_, d)
    dummy = dout_
    grid = (b * (d // BD), K)
    args_in = (u_, dl_, z_ if z_ is not None else dummy, B_, C_, A_,
               D_ if D_ is not None else dummy, bias_ if bias_ is not None else dummy, dout_)
    if K > 1:
        oflow = torch.empty(kshape, **f32)
        scan_bwd_kernel[grid](
            *args_in, dummy, dummy, dummy, dummy, dummy, dummy, dummy, dummy, dummy, dummy,
            dummy, oflow, dummy, dummy, d, L, N, G, d // G, K, Lc, 1, 0, sz,
            LOCAL=True, STORE_YZ=False, BD=BD, BT=BT[1], num_warps=wb, **flags)
        gcarry = _chain_chunks(oflow, dsum, A_, dlast_, reverse=True, BN=BN)
    else:
        gcarry = dlast_
    nsub = -(-L // BT[1])
    cw = (2,) if cplx else ()
    scratch = torch.empty((b, nsub, P, N, d), **f32)
    du = torch.empty_like(u_)
    ddelta = torch.empty_like(dl_) if ddelta_ is None else ddelta_
    if z_ is not None and dz_ is None:
        dz_ = torch.empty_like(u_, dtype=z_.dtype)
    nblk = d // BD
    dBp = torch.empty((b, nblk, L, N) + cw, **f32)
    dCp = torch.empty((b, nblk, L, N) + cw, **f32)
    dAp = torch.empty(kshape, **f32)
    dDp = torch.empty((b, K, d), **f32) if D_ is not None else None
    dbp = torch.empty((b, K, d), **f32) if bias_ is not None else None
    dh0 = torch.empty((b, P, N, d), **f32)
    scan_bwd_kernel[grid](
        *args_in, hstart, gcarry, scratch, du, ddelta, dz_ if dz_ is not None else dummy, dBp, dCp, dAp,
        dDp if dDp is not None else dummy, dbp if dbp is not None else dummy, dummy, dh0,
        yz if yz is not None else dummy, d, L, N, G, d // G, K, Lc, nsub, 0, sz,
        LOCAL=False, STORE_YZ=yz is not None, BD=BD, BT=BT[1], num_warps=wb, **flags)
    fold = lambda p: p.view((b, G, nblk // G, L, N) + cw).sum(2)  # noqa: E731
    dA = _unplanes(dAp.sum((0, 1)), cplx)
    dD = dDp.sum((0, 1)) if dDp is not None else None
    dbias = dbp.sum((0, 1)) if dbp is not None else None
    return du, ddelta, dz_, fold(dBp), fold(dCp), dA, dD, dbias, dh0


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, h0, softplus, chunk_len):
        u_, dl_, z_ = _time_major(u), _time_major(delta), _time_major(z)
        B_, C_ = _bc(B), _bc(C)
        out, last, saved = scan_forward(u_, dl_, z_, A, B_, C_, D, delta_bias, h0, softplus, chunk_len)
        A_, D_, bias_, hstart, dsum, cfg = saved
        ctx.save_for_backward(u_, dl_, z_, B_, C_, A_, D_, bias_, hstart, dsum)
        ctx.cfg = cfg
        ctx.dtypes = (B.dtype, C.dtype, h0 is not None)
        if u.stride(1) != 1 and out.is_cuda:  # the caller's layout is dim-major: give out the same layout
            out = _swap(out)
        else:  # (b, d, L) view of the time-major result
            out = out.transpose(1, 2)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u_, dl_, z_, B_, C_, A_, D_, bias_, hstart, dsum = ctx.saved_tensors
        cfg = ctx.cfg
        cplx = cfg[5]
        du, ddelta, dz, dBs, dCs, dA, dD, dbias, dh0 = scan_backward(
            (A_, D_, bias_, hstart, dsum, cfg), u_, dl_, z_, B_, C_,
            None if dout is None else _time_major(dout), dlast)
        bdt, cdt, has_h0 = ctx.dtypes

        def _fold(s: Tensor, dt: torch.dtype) -> Tensor:  # (b, G, L, N[, 2]) -> (b, G, N, L)
            s = torch.view_as_complex(s) if cplx else s.to(dt)
            return s.transpose(-1, -2)

        dB, dC = _fold(dBs, bdt), _fold(dCs, cdt)
        dh = _unplanes(dh0, cplx) if has_h0 else None
        tr = lambda x: None if x is None else x.transpose(1, 2)  # noqa: E731  (b, d, L) views
        return tr(du), tr(ddelta), dA, dB, dC, dD, tr(dz), dbias, dh, None, None


def selective_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    initial_state: Tensor | None,
    *,
    chunk_len: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Fused selective scan on normalised inputs (see ``selective_scan`` for the public API).

    u, delta, z: (b, d, L) fp32/bf16/fp16;  A: (d, N) float32 or complex64;  B, C: (b, g, N, L), complex64
    for complex A;  D, delta_bias: (d,) or None;  initial_state: (b, d, N) or None.
    ``chunk_len`` forces the time-chunk length (tests use it to exercise the multi-chunk path).
    Returns out (b, d, L) in u's dtype and last state (b, d, N) float32 / complex64. Differentiable.
    """
    return _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                      delta_softplus, chunk_len)
