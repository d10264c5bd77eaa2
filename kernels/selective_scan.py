"""Public selective scan: argument checks, layout normalisation and backend dispatch.

Drop-in for mamba-ssm's ``selective_scan_fn`` (same positional arguments, same results), plus a
keyword-only ``initial_state`` that seeds h_0 and receives a gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .backend import resolve_backend
from .checks import check, shape_of
from .selective_scan_cpu import selective_scan_cpu

_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _normalise_bc(name: str, X: Tensor, b: int, d: int, n: int, L: int, cplx: bool) -> Tensor:
    """B/C -> (b, g, N, L); complex when A is complex (accepts mamba-ssm's interleaved (.., N, 2L))."""
    check(isinstance(X, Tensor), f"{name} must be a tensor")
    check(
        X.dim() in (3, 4),
        f"{name} must be input-dependent with shape (batch, N, L) or (batch, groups, N, L); "
        f"got shape {tuple(X.shape)}",
    )
    if X.dim() == 3:
        X = X.unsqueeze(1)
    if cplx and not X.is_complex():
        check(
            X.shape[-1] == 2 * L,
            f"{name}: with complex A, a real {name} must be interleaved (batch, [groups,] N, 2L) "
            f"with 2L={2 * L}; got shape {tuple(X.shape)}",
        )
        X = torch.view_as_complex(X.float().unflatten(-1, (L, 2)).contiguous())
    check(
        X.is_complex() == cplx,
        f"{name} must be {'complex' if cplx else 'real'} because A is {'complex' if cplx else 'real'}",
    )
    check(
        X.shape[0] == b and X.shape[2] == n and X.shape[3] == L,
        f"{name} must have shape (batch={b}, [groups,] N={n}, L={L}); got {tuple(X.shape)}",
    )
    g = X.shape[1]
    check(g >= 1 and d % g == 0, f"{name}: groups={g} must divide dim={d}")
    return X


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    initial_state: Tensor | None = None,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan (Mamba's S6), with mamba-ssm ``selective_scan_fn`` conventions.

    Args:
        u:     r(batch, dim, L) — input, fp32/bf16/fp16/fp64.
        delta: r(batch, dim, L) — step size before ``delta_bias`` and softplus.
        A:     r(dim, N) float32 or c(dim, N) complex64.
        B, C:  (batch, N, L) or (batch, groups, N, L); complex when A is complex, or real interleaved
               (batch, [groups,] N, 2L) as mamba-ssm accepts.
        D:     r(dim) skip connection;  z: r(batch, dim, L) gate (out *= silu(z));
        delta_bias: r(dim);  delta_softplus: apply softplus to delta + delta_bias.
        return_last_state: also return h_L, (batch, dim, N) (complex for complex A).
        initial_state: optional h_0, (batch, dim, N) (complex for complex A); receives a gradient.
        backend: ``"auto"`` | ``"triton"`` | ``"reference"`` (see ``mambaseq.kernels.backend``).

    Returns:
        out (batch, dim, L) in u's dtype, or ``(out, last_state)`` — state in fp32/complex64.

    Example:
        >>> u = torch.randn(2, 8, 32); dt = torch.rand(2, 8, 32); A = -torch.rand(8, 4)
        >>> B, C = torch.randn(2, 4, 32), torch.randn(2, 4, 32)
        >>> selective_scan(u, dt, A, B, C).shape
        torch.Size([2, 8, 32])
    """
    check(isinstance(u, Tensor) and u.dim() == 3, f"u must be (batch, dim, L); got {shape_of(u)}")
    check(u.dtype in _FLOAT, f"u must be a floating tensor {_FLOAT}; got {u.dtype}")
    b, d, L = u.shape
    check(L >= 1, "u: L must be >= 1")
    check(
        isinstance(delta, Tensor) and tuple(delta.shape) == (b, d, L),
        f"delta must have u's shape {(b, d, L)}; got {shape_of(delta)}",
    )
    check(delta.dtype in _FLOAT, f"delta must be floating; got {delta.dtype}")
    check(isinstance(A, Tensor) and A.dim() == 2 and A.shape[0] == d, f"A must be (dim={d}, N); got {shape_of(A)}")
    check(
        A.dtype in (torch.float32, torch.float64, torch.complex64, torch.complex128),
        f"A must be float32 or complex64 (float64/complex128 for checks); got {A.dtype}",
    )
    n = A.shape[1]
    cplx = A.is_complex()
    B = _normalise_bc("B", B, b, d, n, L, cplx)
    C = _normalise_bc("C", C, b, d, n, L, cplx)
    if D is not None:
        check(tuple(D.shape) == (d,), f"D must be (dim={d},); got {shape_of(D)}")
    if delta_bias is not None:
        check(tuple(delta_bias.shape) == (d,), f"delta_bias must be (dim={d},); got {shape_of(delta_bias)}")
    if z is not None:
        check(tuple(z.shape) == (b, d, L), f"z must have u's shape {(b, d, L)}; got {shape_of(z)}")
    if initial_state is not None:
        check(
            tuple(initial_state.shape) == (b, d, n),
            f"initial_state must be (batch={b}, dim={d}, N={n}); got {shape_of(initial_state)}",
        )
        check(
            initial_state.is_complex() == cplx,
            f"initial_state must be {'complex' if cplx else 'real'} to match A",
        )

    if resolve_backend("selective_scan", backend, u) == "triton":
        from .selective_scan_triton import selective_scan_triton

        out, last = selective_scan_triton(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state
        )
    else:
        out, last = selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
    return (out, last) if return_last_state else out
