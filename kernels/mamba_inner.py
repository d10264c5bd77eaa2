"""The Mamba block after in_proj as one op: causal conv1d -> SiLU -> x_proj / dt_proj -> selective scan
(softplus(delta + bias), D skip, SiLU(z) gate) -> out_proj. Gu & Dao 2023, "Mamba", Fig. 3 and Alg. 2.

``mamba_inner`` is the public function (argument checks, backend dispatch); ``mamba_inner_ref`` is the
short PyTorch statement of the same function (the CPU path, built from the reference conv and scan); the
fused GPU path (``backend="triton"``) is ``mamba_inner_triton.MambaInnerTriton``, which keeps the block's
(batch, L, channels) layout throughout and recomputes the conv output, delta and the gated output in its
backward instead of saving them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .backend import resolve_backend
from .causal_conv1d import WIDTHS as CONV_WIDTHS, causal_conv1d_ref
from .selective_scan import selective_scan


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _split_xdbl(x_dbl: Tensor, R: int, N: int, cplx: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(b, L, R + 2N | R + 4N) -> low-rank dt (b, L, R), B, C (b, L, N) real, or complex64 for complex A."""
    dt, bc = x_dbl.split([R, x_dbl.shape[-1] - R], dim=-1)
    if cplx:
        Br, Bi, Cr, Ci = bc.float().split(N, dim=-1)
        return dt, torch.complex(Br, Bi), torch.complex(Cr, Ci)
    B, C = bc.split(N, dim=-1)
    return dt, B, C


def mamba_inner_ref(xz: Tensor, conv_weight: Tensor, conv_bias: Tensor | None, x_proj_weight: Tensor,
                    dt_proj_weight: Tensor, dt_proj_bias: Tensor, A: Tensor, D: Tensor, out_proj_weight: Tensor,
                    out_proj_bias: Tensor | None = None) -> Tensor:
    """Reference (plain autograd over the reference conv and scan); same arguments as ``mamba_inner``."""
    di = xz.shape[-1] // 2
    x, z = xz.split(di, dim=-1)
    u = causal_conv1d_ref(x.transpose(1, 2), conv_weight, conv_bias, "silu")  # (b, di, L)
    x_dbl = F.linear(u.transpose(1, 2), x_proj_weight)
    dt, B, C = _split_xdbl(x_dbl, dt_proj_weight.shape[1], A.shape[1], A.is_complex())
    dt = F.linear(dt, dt_proj_weight)
    y = selective_scan(u, dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D.float(), z.transpose(1, 2),
                       delta_bias=dt_proj_bias.float(), delta_softplus=True, backend="reference")
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


def mamba_inner(
    xz: Tensor,
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    x_proj_weight: Tensor,
    dt_proj_weight: Tensor,
    dt_proj_bias: Tensor,
    A: Tensor,
    D: Tensor,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor | None = None,
    *,
    backend: str = "auto",
    chunk_len: int | None = None,
) -> Tensor:
    """Mamba block from the in_proj output to the out_proj output (Gu & Dao 2023, Fig. 3 / Alg. 2).

    Args:
        xz: (batch, L, 2 * d_inner) — in_proj output, x then z; fp32/bf16/fp16 (bf16 under autocast). The
            projections run in xz's dtype (the weights are cast to it), the conv and the scan state in fp32.
        conv_weight: (d_inner, width), width 2..8;  conv_bias: (d_inner,) or None.
        x_proj_weight: (dt_rank + 2N, d_inner), or (dt_rank + 4N, d_inner) for complex A (rows: dt, B_re,
            B_im, C_re, C_im).  dt_proj_weight: (d_inner, dt_rank);  dt_proj_bias: (d_inner,) — added to
            delta before softplus.
        A: (d_inner, N) float32 (real) or complex64 (output 2 Re(C h)).  D: (d_inner,) skip.
        out_proj_weight: (d_model, d_inner);  out_proj_bias: (d_model,) or None.
        backend: "auto" | "triton" | "reference" (see ``mambaseq.kernels.backend``).
        chunk_len: tests only — force the scan's time-chunk length (Triton path).
    Returns:
        (batch, L, d_model) in xz's dtype. Differentiable w.r.t. every tensor argument.
    Raises:
        ValueError on shapes or dtypes that do not fit together, or a backend that cannot run here.
    """
    _check(isinstance(xz, Tensor) and xz.dim() == 3 and xz.shape[-1] % 2 == 0,
           f"xz must be (batch, L, 2 * d_inner); got {tuple(getattr(xz, 'shape', ()))}")
    _check(xz.dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64),
           f"xz must be floating; got {xz.dtype}")
    b, L, two_di = xz.shape
    di = two_di // 2
    _check(L >= 1, "xz: L must be >= 1")
    lo, hi = CONV_WIDTHS
    _check(conv_weight.dim() == 2 and conv_weight.shape[0] == di and lo <= conv_weight.shape[1] <= hi,
           f"conv_weight must be (d_inner={di}, width {lo}..{hi}); got {tuple(conv_weight.shape)}")
    _check(conv_bias is None or tuple(conv_bias.shape) == (di,), f"conv_bias must be (d_inner={di},)")
    _check(A.dim() == 2 and A.shape[0] == di, f"A must be (d_inner={di}, N); got {tuple(A.shape)}")
    N, cplx = A.shape[1], A.is_complex()
    _check(dt_proj_weight.dim() == 2 and dt_proj_weight.shape[0] == di,
           f"dt_proj_weight must be (d_inner={di}, dt_rank); got {tuple(dt_proj_weight.shape)}")
    R = dt_proj_weight.shape[1]
    n_bc = (4 if cplx else 2) * N
    _check(tuple(x_proj_weight.shape) == (R + n_bc, di),
           f"x_proj_weight must be (dt_rank + {'4' if cplx else '2'}N = {R + n_bc}, d_inner={di}); "
           f"got {tuple(x_proj_weight.shape)}")
    _check(tuple(dt_proj_bias.shape) == (di,), f"dt_proj_bias must be (d_inner={di},)")
    _check(tuple(D.shape) == (di,), f"D must be (d_inner={di},)")
    _check(out_proj_weight.dim() == 2 and out_proj_weight.shape[1] == di,
           f"out_proj_weight must be (d_model, d_inner={di}); got {tuple(out_proj_weight.shape)}")
    if resolve_backend("mamba_inner", backend, xz) == "reference":
        return mamba_inner_ref(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
                               out_proj_weight, out_proj_bias)
    _check(xz.dtype != torch.float64, "mamba_inner: the Triton path takes fp32/bf16/fp16 xz, not fp64")
    from .mamba_inner_triton import MambaInnerTriton

    cd = xz.dtype  # the projections' dtype (what autocast chose for in_proj)
    return MambaInnerTriton.apply(
        xz.contiguous(), conv_weight.contiguous(), conv_bias, x_proj_weight.to(cd), dt_proj_weight.to(cd),
        dt_proj_bias.float(), A, D.float(), out_proj_weight.to(cd),
        None if out_proj_bias is None else out_proj_bias.to(cd), chunk_len)
