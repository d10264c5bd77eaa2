"""Single-step selective SSM update for recurrent decoding (mamba-ssm ``selective_state_update``).

One token through the selective scan's recurrence, updating the state IN PLACE:

    dt  = softplus(dt + dt_bias)            (bias / softplus optional)
    h   = exp(dt * A) * h + (dt * x) * B    per (batch, channel, state)
    y   = scale * Re(sum_n C_n h_n) + D * x,  scale = 2 for complex A (mamba-ssm convention), else 1
    out = y * silu(z)                       (if z is given)

Feeding a sequence one token at a time reproduces ``selective_scan``'s outputs and last state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .backend import resolve_backend
from .checks import check
from .selective_scan_ref import selective_scan_ref


def _bc_groups(name: str, X: Tensor, b: int, d: int, n: int, cplx: bool) -> Tensor:
    """B/C -> (batch, groups, N), complex when A is complex."""
    check(isinstance(X, Tensor) and X.dim() in (2, 3), f"{name} must be (batch, N) or (batch, groups, N)")
    if X.dim() == 2:
        X = X.unsqueeze(1)
    check(X.shape[0] == b and X.shape[2] == n, f"{name} must be (batch={b}, [groups,] N={n}); got {tuple(X.shape)}")
    check(d % X.shape[1] == 0, f"{name}: groups={X.shape[1]} must divide dim={d}")
    check(X.is_complex() == cplx, f"{name} must be {'complex' if cplx else 'real'} because A is")
    return X


def _validate(state, x, dt, A, B, C, D, z, dt_bias):
    check(isinstance(state, Tensor) and state.dim() == 3, "state must be (batch, dim, N)")
    b, d, n = state.shape
    cplx = A.is_complex()
    check(
        state.dtype in ((torch.complex64, torch.complex128) if cplx else (torch.float32, torch.float64)),
        f"state must be {'complex64' if cplx else 'float32'} (updated in place); got {state.dtype}",
    )
    check(tuple(x.shape) == (b, d), f"x must be (batch={b}, dim={d}); got {tuple(x.shape)}")
    check(tuple(dt.shape) == (b, d), f"dt must be (batch={b}, dim={d}); got {tuple(dt.shape)}")
    check(tuple(A.shape) == (d, n), f"A must be (dim={d}, N={n}); got {tuple(A.shape)}")
    B = _bc_groups("B", B, b, d, n, cplx)
    C = _bc_groups("C", C, b, d, n, cplx)
    check(B.shape[1] == C.shape[1], "B and C must have the same number of groups")
    if D is not None:
        check(tuple(D.shape) == (d,), f"D must be (dim={d},); got {tuple(D.shape)}")
    if dt_bias is not None:
        check(tuple(dt_bias.shape) == (d,), f"dt_bias must be (dim={d},); got {tuple(dt_bias.shape)}")
    if z is not None:
        check(tuple(z.shape) == (b, d), f"z must be (batch={b}, dim={d}); got {tuple(z.shape)}")
    return B, C


def selective_state_update_ref(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                               D: Tensor | None = None, z: Tensor | None = None, dt_bias: Tensor | None = None,
                               dt_softplus: bool = False) -> Tensor:
    """Pure-PyTorch step, the oracle and the CPU path: one step of ``selective_scan_ref`` from ``state``, in
    fp32 math (fp64 for an fp64 state); ``state`` is updated in place. Arguments as ``selective_state_update``
    (not validated). Returns out (batch, dim) in x's dtype."""
    b, d, n = state.shape
    B, C = _bc_groups("B", B, b, d, n, A.is_complex()), _bc_groups("C", C, b, d, n, A.is_complex())
    ft = torch.float64 if state.dtype in (torch.float64, torch.complex128) else torch.float32
    f = lambda t: None if t is None else t.to(ft)  # noqa: E731
    out, last = selective_scan_ref(x.to(ft)[..., None], dt.to(ft)[..., None], A.to(state.dtype),
                                   B.to(state.dtype)[..., None], C.to(state.dtype)[..., None], f(D),
                                   None if z is None else z.to(ft)[..., None], f(dt_bias), dt_softplus, state)
    state.copy_(last)
    return out[..., 0].to(x.dtype)


def selective_state_update(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                           D: Tensor | None = None, z: Tensor | None = None, dt_bias: Tensor | None = None,
                           dt_softplus: bool = False, *, backend: str = "auto") -> Tensor:
    """One recurrent step of the selective SSM; ``state`` is updated in place.

    Args:
        state: (batch, dim, N) float32, or complex64 for complex A.
        x, dt: (batch, dim) fp32/bf16/fp16.   A: (dim, N) float32 or complex64.
        B, C: (batch, N) or (batch, groups, N); complex when A is complex.
        D, dt_bias: (dim,) or None.   z: (batch, dim) or None.   dt_softplus: softplus(dt + dt_bias).
        backend: "auto" | "triton" | "reference".
    Returns:
        out (batch, dim) in x's dtype.

    Example:
        >>> h = torch.zeros(2, 8, 4); A = -torch.rand(8, 4)
        >>> selective_state_update(h, torch.randn(2, 8), torch.rand(2, 8), A,
        ...                        torch.randn(2, 4), torch.randn(2, 4)).shape
        torch.Size([2, 8])
    """
    B, C = _validate(state, x, dt, A, B, C, D, z, dt_bias)
    if resolve_backend("selective_state_update", backend, x) == "triton":
        from .selective_state_update_triton import selective_state_update_triton

        return selective_state_update_triton(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    return selective_state_update_ref(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
