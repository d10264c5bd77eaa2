"""The selective scan's oracle: the shortest statement of the recurrence, and the two pieces around it that
every PyTorch path shares.

* ``selective_scan_ref`` — a per-step loop in the inputs' own precision (call it with float64 for an
  oracle). Tests compare every fast path with it (the CPU path ``selective_scan_cpu.py``, the Triton
  kernels); the one-token oracle ``selective_state_update_ref`` is one step of it. Nothing else should call
  it: it keeps every state and is slow.
* ``ssm_step_sizes`` (delta + bias, softplus) and ``ssm_output`` (the D skip and the SiLU(z) gate): the same
  arithmetic in the oracle, the CPU path and the one-token step, written once.

Conventions are mamba-ssm's ``selective_scan_ref`` / ``selective_scan_fn``: per time step t,

    dt = softplus(delta_t + delta_bias)  (bias, softplus optional);   h_t = exp(dt A) h_{t-1} + dt u_t B_t
    y_t = scale * Re(sum_n C_t,n h_t,n) + D u_t,   scale = 2 for complex A, else 1;   out_t = y_t * silu(z_t)

(The package attribute ``mambaseq.kernels.selective_scan_ref`` is this function; import the module itself
as ``from mambaseq.kernels.selective_scan_ref import ...``.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _per_channel(v: Tensor, like: Tensor) -> Tensor:
    """A (dim,) vector as a view that broadcasts over dim 1 of ``like`` (batch, dim, ...)."""
    return v.view(-1, *([1] * (like.dim() - 2)))


def ssm_step_sizes(delta: Tensor, delta_bias: Tensor | None, softplus: bool) -> Tensor:
    """delta (batch, dim, ...) -> softplus(delta + delta_bias) (bias (dim,) or None; softplus optional), in
    delta's dtype."""
    if delta_bias is not None:
        delta = delta + _per_channel(delta_bias, delta)
    return F.softplus(delta) if softplus else delta


def ssm_output(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """The scan's read-out y (batch, dim, ...) -> (y + D u) * silu(z); D (dim,) and z (u's shape) optional."""
    if D is not None:
        y = y + _per_channel(D, u) * u
    if z is not None:
        y = y * F.silu(z)
    return y


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                       z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                       initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Step-by-step loop in the inputs' own precision (float64 inputs for an oracle).

    u, delta, z: r(b d L);  A: r(d N) or c(d N);  B, C: already normalised, r/c(b g N L) (g divides d);
    D, delta_bias: r(d) or None;  initial_state: h_0, (b d N) in A's dtype, or None (zeros).
    Returns (out r(b d L), last_state (b d N)); differentiable through plain autograd.
    """
    b, d, L = u.shape
    n = A.shape[1]
    g = B.shape[1]
    delta = ssm_step_sizes(delta, delta_bias, delta_softplus)
    Bc = B.repeat_interleave(d // g, dim=1)  # (b d N L)
    Cc = C.repeat_interleave(d // g, dim=1)
    h = initial_state if initial_state is not None else u.new_zeros(b, d, n, dtype=A.dtype)
    ys = []
    for t in range(L):
        a = torch.exp(delta[:, :, t, None] * A)
        h = a * h + (delta[:, :, t] * u[:, :, t])[..., None] * Bc[..., t]
        y = (h * Cc[..., t]).sum(-1)
        ys.append(2 * y.real if y.is_complex() else y)
    return ssm_output(torch.stack(ys, dim=-1), u, D, z), h
