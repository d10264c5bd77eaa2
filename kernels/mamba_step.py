"""Fused ops of the Mamba block's one-token decoding step, each with its pure-PyTorch oracle beside it.

* ``ssm_step(state, x, x_dbl, z, dt_weight, dt_bias, A_log, D, A_imag=None)``: the block's SSM from
  x_proj's output, in one kernel: with R = dt_weight.shape[1] and N = A_log.shape[1],

      dt = softplus(x_dbl[:, :R] @ dt_weight.T + dt_bias)                     (batch, dim)
      B, C = x_dbl[:, R:R+N], x_dbl[:, R+N:R+2N]     (real A = -exp(A_log))
           = x_dbl[:, R:R+N] + i x_dbl[:, R+N:R+2N], x_dbl[:, R+2N:R+3N] + i x_dbl[:, R+3N:]
                                                      (complex A = -exp(A_log) + i A_imag)
      h = exp(dt A) h + dt x B;  y = (C . h) [2 Re(.) if complex] + D x;  out = y * silu(z)

  i.e. ``selective_state_update`` with the dt projection and the parameter conversions folded in.
* ``add_rms_norm(x, residual, weight, eps)``: (normed, new_residual) with new_residual = residual + x
  (x if residual is None), in x's dtype, and normed = rms_norm(new_residual) * weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .backend import resolve_backend
from .checks import check, shape_of
from .selective_state_update import selective_state_update_ref


def ssm_step_ref(state: Tensor, x: Tensor, x_dbl: Tensor, z: Tensor | None, dt_weight: Tensor, dt_bias: Tensor,
                 A_log: Tensor, D: Tensor, A_imag: Tensor | None = None) -> Tensor:
    """Pure-PyTorch oracle (and the CPU path): the Mamba block's eager step, op for op."""
    R, N = dt_weight.shape[1], A_log.shape[1]
    ft = torch.float64 if state.dtype in (torch.float64, torch.complex128) else torch.float32
    dt_low, bc = x_dbl.split([R, x_dbl.shape[-1] - R], dim=-1)
    dt = F.linear(dt_low, dt_weight)  # dt_bias is added in fp32 by the update
    if A_imag is not None:
        Br, Bi, Cr, Ci = bc.to(ft).split(N, dim=-1)
        B, C = torch.complex(Br, Bi), torch.complex(Cr, Ci)
        A = torch.complex(-torch.exp(A_log.to(ft)), A_imag.to(ft))
    else:
        B, C = bc.split(N, dim=-1)
        A = -torch.exp(A_log.to(ft))
    return selective_state_update_ref(state, x, dt, A, B, C, D.to(ft), z, dt_bias.to(ft), True)


def ssm_step(state: Tensor, x: Tensor, x_dbl: Tensor, z: Tensor | None, dt_weight: Tensor, dt_bias: Tensor,
             A_log: Tensor, D: Tensor, A_imag: Tensor | None = None, *, backend: str = "auto") -> Tensor:
    """One decoding step of a Mamba block's SSM (formulas in the module docstring); ``state`` in place.

    Args:
        state: (batch, dim, N) float32, or complex64 when ``A_imag`` is given; contiguous.
        x: (batch, dim) conv output (after SiLU).  z: (batch, dim) gate or None. Rows may be strided
            views (e.g. of in_proj's output).
        x_dbl: (batch, R + 2N) real or (batch, R + 4N) complex: x_proj's output.
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
    check(state.dtype == (torch.complex64 if cplx else torch.float32),
           f"state must be {'complex64' if cplx else 'float32'}; got {state.dtype}")
    R = dt_weight.shape[1] if dt_weight.dim() == 2 else -1
    check(tuple(dt_weight.shape) == (d, R), f"dt_weight must be (dim={d}, R); got {shape_of(dt_weight)}")
    for name, t in (("x", x), ("z", z)):
        check(t is None or tuple(t.shape) == (b, d), f"{name} must be (batch={b}, dim={d}); got {shape_of(t)}")
    n_in = R + (4 if cplx else 2) * N
    check(tuple(x_dbl.shape) == (b, n_in), f"x_dbl must be (batch={b}, {n_in}); got {shape_of(x_dbl)}")
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
