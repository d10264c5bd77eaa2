"""Fused ops of the Mamba block's one-token decoding step, each with its pure-PyTorch oracle beside it.

* ``ssm_step(state, x, x_dbl, z, dt_weight, dt_bias, A_log, D, A_imag=None)``: the block's SSM from
  x_proj's output, in one kernel: with R = dt_weight.shape[1] and N = A_log.shape[1],

      dt = softplus(x_dbl[:, :R] @ dt_weight.T + dt_bias)                     (batch, dim)
      B, C = x_dbl[:, R:R+N], x_dbl[:, R+N:R+2N]     (real A = -exp(A_log))
           = x_dbl[:, R:R+N] + i x_dbl[:, R+N:R+2N], x_dbl[:, R+2N:R+3N] + i x_dbl[:, R+3N:]
                                                      (complex A = -exp(A_log) + i A_imag)
      h = exp(dt A) h + dt x B;  y = (C . h) [2 Re(.) if complex] + D x;  out = y * silu(z)

  i.e. ``selective_state_update`` with the dt projection and the parameter conversions folded in.
* ``conv_x_proj_step(x, conv_state, weight, bias, x_proj_weight)``: the causal conv's one-token update
  (``causal_conv1d_update`` with SiLU) and x_proj's Linear in one kernel: (x_conv, x_dbl) with
  x_dbl = x_conv @ x_proj_weight.T, the latter given to ``ssm_step`` as P partial sums (one per channel
  block, fp32) that it adds, so x_proj needs no launch of its own.
* ``add_rms_norm_linear(x, residual, norm_weight, eps, weight, bias)``: ``add_rms_norm`` then the next
  block's in_proj Linear, one kernel for a few rows (batch <= 4 on the GPU), the two ops otherwise.
* ``add_rms_norm(x, residual, weight, eps)``: (normed, new_residual) with new_residual = residual + x
  (x if residual is None), in x's dtype, and normed = rms_norm(new_residual) * weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .backend import resolve_backend
from .checks import check, shape_of
from .causal_conv1d import causal_conv1d_update, causal_conv1d_update_ref, check_conv_update
from .selective_state_update import selective_state_update_ref

MAX_FUSED_NORM_ROWS = 4  # add_rms_norm_linear: one Triton kernel up to this batch (rows live in registers)
HALF_STATE_DTYPES = (torch.bfloat16, torch.float16)  # a real SSM's state may be kept in these (fp32 math)
REAL_STATE_DTYPES = (torch.float32, *HALF_STATE_DTYPES)  # the decoding step's real state dtypes (complex: complex64)
MAX_FUSED_X_PROJ_ROWS = 15  # conv_x_proj_step fuses x_proj up to this batch; above, x_proj is a cuBLAS GEMM
# (H200, bench/tune_step.py: at b 16 fused 8.7 us vs 8.9 unfused, at b 64 13.5 vs 13.9 at the best blocks, and the
# partial sums slow ssm_step down; at b 1 5.7 vs 7.6)


def ssm_step_ref(state: Tensor, x: Tensor, x_dbl: Tensor, z: Tensor | None, dt_weight: Tensor, dt_bias: Tensor,
                 A_log: Tensor, D: Tensor, A_imag: Tensor | None = None) -> Tensor:
    """Pure-PyTorch oracle (and the CPU path): the Mamba block's eager step, op for op. A (P, b, E) x_dbl
    (partial sums) is added in fp32 and rounded to x's dtype first, as x_proj's Linear output would be."""
    R, N = dt_weight.shape[1], A_log.shape[1]
    ft = torch.float64 if state.dtype in (torch.float64, torch.complex128) else torch.float32
    if x_dbl.dim() == 3:
        x_dbl = x_dbl.sum(0).to(x.dtype)
    dt_low, bc = x_dbl.split([R, x_dbl.shape[-1] - R], dim=-1)
    dt = F.linear(dt_low, dt_weight)  # dt_bias is added in fp32 by the update
    if A_imag is not None:
        Br, Bi, Cr, Ci = bc.to(ft).split(N, dim=-1)
        B, C = torch.complex(Br, Bi), torch.complex(Cr, Ci)
        A = torch.complex(-torch.exp(A_log.to(ft)), A_imag.to(ft))
    else:
        B, C = bc.split(N, dim=-1)
        A = -torch.exp(A_log.to(ft))
    if state.dtype in HALF_STATE_DTYPES:  # a half-precision state: fp32 math, rounded when stored
        h = state.float()
        out = selective_state_update_ref(h, x, dt, A, B, C, D.to(ft), z, dt_bias.to(ft), True)
        state.copy_(h)
        return out
    return selective_state_update_ref(state, x, dt, A, B, C, D.to(ft), z, dt_bias.to(ft), True)


def ssm_step(state: Tensor, x: Tensor, x_dbl: Tensor, z: Tensor | None, dt_weight: Tensor, dt_bias: Tensor,
             A_log: Tensor, D: Tensor, A_imag: Tensor | None = None, *, backend: str = "auto") -> Tensor:
    """One decoding step of a Mamba block's SSM (formulas in the module docstring); ``state`` in place.

    Args:
        state: (batch, dim, N) float32 (or bfloat16/float16: the update is computed in fp32 and rounded
            when stored, as mamba-ssm's half-precision cache), or complex64 when ``A_imag`` is given; contiguous.
        x: (batch, dim) conv output (after SiLU).  z: (batch, dim) gate or None. Rows may be strided
            views (e.g. of in_proj's output).
        x_dbl: (batch, R + 2N) real or (batch, R + 4N) complex: x_proj's output; or (P, batch, ...) float32
            partial sums of it, as ``conv_x_proj_step`` returns them (added, then rounded to x's dtype).
        dt_weight: (dim, R) dt_proj weight.  dt_bias, D: (dim,).  A_log, A_imag: (dim, N).
        backend: "auto" | "triton" | "reference".
    Returns:
        (batch, dim) in x's dtype.
    Raises:
        ValueError: on a shape or dtype mismatch (message names the argument and both shapes).
    """
    check(isinstance(state, Tensor) and state.dim() == 3, f"state must be (batch, dim, N); got {shape_of(state)}")
    b, d, N = state.shape
    cplx = A_imag is not None
    check(state.dtype in ((torch.complex64,) if cplx else REAL_STATE_DTYPES),
          f"state must be {'complex64' if cplx else 'float32, bfloat16 or float16'}; got {state.dtype}")
    R = dt_weight.shape[1] if dt_weight.dim() == 2 else -1
    check(tuple(dt_weight.shape) == (d, R), f"dt_weight must be (dim={d}, R); got {shape_of(dt_weight)}")
    for name, t in (("x", x), ("z", z)):
        check(t is None or tuple(t.shape) == (b, d), f"{name} must be (batch={b}, dim={d}); got {shape_of(t)}")
    n_in = R + (4 if cplx else 2) * N
    check(isinstance(x_dbl, Tensor) and (tuple(x_dbl.shape) == (b, n_in) or (
        x_dbl.dim() == 3 and tuple(x_dbl.shape[1:]) == (b, n_in) and x_dbl.dtype == torch.float32)),
        f"x_dbl must be (batch={b}, {n_in}) or float32 partial sums (P, {b}, {n_in}); got {shape_of(x_dbl)}")
    for name, t in (("A_log", A_log), ("A_imag", A_imag)):
        check(t is None or tuple(t.shape) == (d, N), f"{name} must be (dim={d}, N={N}); got {shape_of(t)}")
    for name, t in (("dt_bias", dt_bias), ("D", D)):
        check(tuple(t.shape) == (d,), f"{name} must be (dim={d},); got {shape_of(t)}")
    if resolve_backend("ssm_step", backend, x) == "triton":
        from .mamba_step_triton import ssm_step_triton

        return ssm_step_triton(state, x, x_dbl, z, dt_weight, dt_bias, A_log, D, A_imag)
    return ssm_step_ref(state, x, x_dbl, z, dt_weight, dt_bias, A_log, D, A_imag)


def add_rms_norm_ref(x: Tensor, residual: Tensor | None, weight: Tensor, eps: float | None) -> tuple[Tensor, Tensor]:
    """Pure-PyTorch oracle (and the CPU path): ``residual + x`` then ``F.rms_norm``."""
    res = x if residual is None else residual + x
    return F.rms_norm(res, (res.shape[-1],), weight, eps), res


def add_rms_norm(x: Tensor, residual: Tensor | None, weight: Tensor, eps: float | None = None, *,
                 backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Residual add + RMSNorm of a (batch, d) row block (the pre-norm of a residual block's step).

    Args:
        x: (batch, d) the new branch output (or the embedding).  residual: (batch, d) or None.
        weight: (d,).  eps: None means ``torch.finfo(x.dtype).eps`` (as ``nn.RMSNorm``).
    Returns:
        (normed, new_residual), both (batch, d) in x's dtype.
    Raises:
        ValueError: on mismatched shapes.
    """
    check(isinstance(x, Tensor) and x.dim() == 2, f"x must be (batch, d); got {shape_of(x)}")
    check(residual is None or residual.shape == x.shape, f"residual must be {tuple(x.shape)}; got {shape_of(residual)}")
    check(tuple(weight.shape) == (x.shape[1],), f"weight must be ({x.shape[1]},); got {shape_of(weight)}")
    if resolve_backend("add_rms_norm", backend, x) == "triton":
        from .mamba_step_triton import add_rms_norm_triton

        return add_rms_norm_triton(x, residual, weight, torch.finfo(x.dtype).eps if eps is None else eps)
    return add_rms_norm_ref(x, residual, weight, eps)


def conv_x_proj_step_ref(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None,
                         x_proj_weight: Tensor) -> tuple[Tensor, Tensor]:
    """Pure-PyTorch oracle (and the CPU path): ``causal_conv1d_update_ref`` with SiLU, then x_proj's Linear."""
    x_conv = causal_conv1d_update_ref(x, conv_state, weight, bias, "silu")
    return x_conv, F.linear(x_conv, x_proj_weight)


def conv_x_proj_step(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None, x_proj_weight: Tensor,
                     *, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """The Mamba block's causal conv update (SiLU) and x_proj for one token; ``conv_state`` in place.

    Args:
        x: (batch, dim) the conv input (a strided view of in_proj's output is fine).
        conv_state: (batch, dim, width) contiguous, rolled left by one and x appended (as mamba-ssm's
            ``causal_conv1d_update``).  weight: (dim, width).  bias: (dim,) or None.
        x_proj_weight: (E, dim), E = dt_rank + 2N (real) or + 4N (complex); x_proj has no bias.
        backend: "auto" | "triton" | "reference".
    Returns:
        (x_conv, x_dbl): x_conv (batch, dim) in x's dtype; x_dbl = x_conv @ x_proj_weight.T, as (batch, E) in
        x's dtype (reference; and Triton above MAX_FUSED_X_PROJ_ROWS rows, where it is a cuBLAS GEMM after the
        conv kernel) or as (P, batch, E) float32 partial sums over P channel blocks (the fused Triton kernel),
        which ``ssm_step`` adds; ``x_dbl.sum(0)`` gives the product.
    Raises:
        ValueError: on a shape mismatch (naming the argument).
    """
    check_conv_update(x, conv_state, weight, bias, "silu")
    b, d = x.shape
    check(isinstance(x_proj_weight, Tensor) and x_proj_weight.dim() == 2 and x_proj_weight.shape[1] == d,
          f"x_proj_weight must be (E, dim={d}); got {shape_of(x_proj_weight)}")
    if resolve_backend("conv_x_proj_step", backend, x) == "triton":
        if b <= MAX_FUSED_X_PROJ_ROWS:
            from .mamba_step_triton import conv_x_proj_step_triton

            return conv_x_proj_step_triton(x, conv_state, weight, bias, x_proj_weight)
        x_conv = causal_conv1d_update(x, conv_state, weight, bias, "silu", backend="triton")
        return x_conv, F.linear(x_conv, x_proj_weight)
    return conv_x_proj_step_ref(x, conv_state, weight, bias, x_proj_weight)


def add_rms_norm_linear_ref(x: Tensor, residual: Tensor | None, norm_weight: Tensor, eps: float | None,
                            weight: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Pure-PyTorch oracle (and the CPU path): ``add_rms_norm_ref`` then ``F.linear``."""
    normed, res = add_rms_norm_ref(x, residual, norm_weight, eps)
    return F.linear(normed, weight, bias), res


def add_rms_norm_linear(x: Tensor, residual: Tensor | None, norm_weight: Tensor, eps: float | None,
                        weight: Tensor, bias: Tensor | None = None, *, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Residual add + RMSNorm + Linear of a (batch, d) row block: a residual block's pre-norm and its
    in_proj, for one decoding step.

    Args:
        x: (batch, d) the previous block's output (or the embedding).  residual: (batch, d) or None.
        norm_weight: (d,).  eps: None means ``torch.finfo(x.dtype).eps`` (as ``nn.RMSNorm``).
        weight: (out, d) the Linear's weight.  bias: (out,) or None.
    Returns:
        (rms_norm(residual + x) @ weight.T + bias, residual + x): (batch, out) and (batch, d), in x's dtype.
        On the GPU with batch <= MAX_FUSED_NORM_ROWS (4) it is one Triton kernel; otherwise ``add_rms_norm`` and ``F.linear``.
    Raises:
        ValueError: on mismatched shapes.
    """
    check(isinstance(x, Tensor) and x.dim() == 2, f"x must be (batch, d); got {shape_of(x)}")
    b, d = x.shape
    check(residual is None or residual.shape == x.shape, f"residual must be {tuple(x.shape)}; got {shape_of(residual)}")
    check(tuple(norm_weight.shape) == (d,), f"norm_weight must be ({d},); got {shape_of(norm_weight)}")
    check(isinstance(weight, Tensor) and weight.dim() == 2 and weight.shape[1] == d,
          f"weight must be (out, d={d}); got {shape_of(weight)}")
    check(bias is None or tuple(bias.shape) == (weight.shape[0],),
          f"bias must be ({weight.shape[0]},); got {shape_of(bias)}")
    if b <= MAX_FUSED_NORM_ROWS and resolve_backend("add_rms_norm_linear", backend, x) == "triton":
        from .mamba_step_triton import add_rms_norm_linear_triton

        return add_rms_norm_linear_triton(x, residual, norm_weight, torch.finfo(x.dtype).eps if eps is None else eps,
                                          weight, bias)
    normed, res = add_rms_norm(x, residual, norm_weight, eps, backend=backend)
    return F.linear(normed, weight, bias), res
