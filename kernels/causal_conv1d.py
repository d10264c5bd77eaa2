"""Causal depthwise conv1d (Mamba's short convolution) and its single-step decoding update.

Public ops, each with a pure-PyTorch reference beside it (mamba-ssm / causal-conv1d conventions):

* ``causal_conv1d(x, weight, bias=None, activation=None)``: x (batch, dim, L), weight (dim, width),
  width 2..8; out[b, c, t] = act(bias[c] + sum_k weight[c, k] * x[b, c, t - (width - 1) + k]),
  with x = 0 before t = 0. Differentiable w.r.t. x, weight and bias.
* ``causal_conv1d_update(x, conv_state, weight, bias=None, activation=None)``: x (batch, dim) is the
  next token; conv_state (batch, dim, width) holds the last ``width`` inputs and is rolled IN PLACE
  (shift left, append x); returns out (batch, dim) = act(bias + sum_k weight[:, k] * conv_state[:, :, k]).

Feeding a sequence through ``causal_conv1d_update`` one token at a time, starting from a zero state,
reproduces ``causal_conv1d`` (tests check it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .backend import resolve_backend
from .checks import check

_ACTIVATIONS = (None, "silu", "swish")
WIDTHS = (2, 8)  # conv widths the kernels take (taps unrolled in registers); mamba-ssm's CUDA kernel takes 2..4


def _validate(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str | None, x_dims: int) -> None:
    what = "(batch, dim, L)" if x_dims == 3 else "(batch, dim)"
    check(isinstance(x, Tensor) and x.dim() == x_dims, f"x must be {what}; got {getattr(x, 'shape', x)}")
    check(x.is_floating_point(), f"x must be a floating tensor; got {x.dtype}")
    check(
        isinstance(weight, Tensor) and weight.dim() == 2 and weight.shape[0] == x.shape[1],
        f"weight must be (dim={x.shape[1]}, width); got {tuple(getattr(weight, 'shape', ()))}",
    )
    check(WIDTHS[0] <= weight.shape[1] <= WIDTHS[1],
          f"weight: width must be in {WIDTHS[0]}..{WIDTHS[1]}; got {weight.shape[1]}")
    if bias is not None:
        check(tuple(bias.shape) == (x.shape[1],), f"bias must be (dim={x.shape[1]},); got {tuple(bias.shape)}")
    check(activation in _ACTIVATIONS, f"activation must be one of {_ACTIVATIONS}; got {activation!r}")


def causal_conv1d_naive(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None
) -> Tensor:
    """The shortest statement of the op (plain autograd, fp32/fp64): the oracle the tests use."""
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    L, width = x.shape[-1], weight.shape[1]
    xp = F.pad(x.to(ct), (width - 1, 0))  # causal left pad
    out = sum(weight.to(ct)[:, k, None] * xp[:, :, k : k + L] for k in range(width))
    if bias is not None:
        out = out + bias.to(ct)[:, None]
    if activation is not None:
        out = F.silu(out)
    return out.to(x.dtype)


class _CausalConv1dRef(torch.autograd.Function):
    """Causal depthwise conv (+ SiLU) over (batch, L, dim) rows with a hand-written backward.

    Every op is a shifted multiply-add over whole time-major rows: no padded copies, and the backward
    needs no zero-filled (batch, L + width - 1, dim) gradient buffers (what plain autograd through
    slices allocates per tap), which dominated the block's CPU backward.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, act):
        ct = torch.float64 if x.dtype == torch.float64 else torch.float32
        xt = x.transpose(1, 2).to(ct).contiguous()  # (b, L, dim): a view when x came from a linear layer
        w = weight.to(ct).t()  # (width, dim); tap width-1-s multiplies x_{t-s}
        width = w.shape[0]
        pre = xt * w[width - 1]
        for s in range(1, min(width, xt.shape[1])):
            pre[:, s:].addcmul_(xt[:, :-s], w[width - 1 - s])
        if bias is not None:
            pre += bias.to(ct)
        out = F.silu(pre) if act else pre
        ctx.act, ctx.x_dtype = act, x.dtype
        ctx.b_dtype = bias.dtype if bias is not None else None
        ctx.save_for_backward(xt, weight, pre if act else None)
        return out.transpose(1, 2).to(x.dtype)

    @staticmethod
    def backward(ctx, gout):
        xt, weight, pre = ctx.saved_tensors
        ct = xt.dtype
        g = gout.transpose(1, 2).to(ct).contiguous()
        if ctx.act:
            g = torch.ops.aten.silu_backward(g, pre)
        w = weight.to(ct).t()
        width, L = w.shape[0], xt.shape[1]
        gx = g * w[width - 1]
        gw = torch.zeros_like(w)
        tmp = torch.empty_like(g)
        gw[width - 1] = torch.mul(g, xt, out=tmp).sum((0, 1))
        for s in range(1, min(width, L)):
            gx[:, :-s].addcmul_(g[:, s:], w[width - 1 - s])
            gw[width - 1 - s] = torch.mul(g[:, s:], xt[:, :-s], out=tmp[:, s:]).sum((0, 1))
        gb = g.sum((0, 1)).to(ctx.b_dtype) if ctx.b_dtype is not None else None
        return gx.transpose(1, 2).to(ctx.x_dtype), gw.t().to(weight.dtype), gb, None


def causal_conv1d_ref(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None
) -> Tensor:
    """Reference causal depthwise conv1d in fp32 (fp64 for fp64 x) with a hand-written backward; the
    CPU path. x: (batch, dim, L);  weight: (dim, width);  bias: (dim,) or None;  activation: None |
    "silu" | "swish". Returns (batch, dim, L) in x's dtype, laid out (batch, L, dim) in memory (the
    layout of the Mamba block's in_proj output and of the scan's inputs, so no transposes on either side).
    """
    return _CausalConv1dRef.apply(x, weight, bias, activation is not None)


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None, *,
                  backend: str = "auto") -> Tensor:
    """Causal depthwise conv1d, optional SiLU.

    Args:
        x: (batch, dim, L) fp32/bf16/fp16.  weight: (dim, width), width 2..8.  bias: (dim,) or None.
        activation: None, "silu" or "swish" (the same).  backend: "auto" | "triton" | "reference".
    Returns:
        (batch, dim, L) in x's dtype.

    Example:
        >>> x = torch.randn(2, 8, 16); w = torch.randn(8, 4)
        >>> causal_conv1d(x, w, activation="silu").shape
        torch.Size([2, 8, 16])
    """
    _validate(x, weight, bias, activation, 3)
    if resolve_backend("causal_conv1d", backend, x) == "triton":
        from .causal_conv1d_triton import causal_conv1d_triton

        return causal_conv1d_triton(x, weight, bias, activation is not None)
    return causal_conv1d_ref(x, weight, bias, activation)


def causal_conv1d_update_ref(
    x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None
) -> Tensor:
    """Reference single step: rolls conv_state (batch, dim, width) in place, returns (batch, dim)."""
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x.to(conv_state.dtype)
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = (conv_state.to(ct) * weight.to(ct)).sum(-1)
    if bias is not None:
        out = out + bias.to(ct)
    if activation is not None:
        out = F.silu(out)
    return out.to(x.dtype)


def check_conv_update(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None,
                      activation: str | None) -> None:
    """The arguments of a one-token conv update (``causal_conv1d_update``, ``mamba_step.conv_x_proj_step``):
    ValueError naming the first bad one."""
    _validate(x, weight, bias, activation, 2)
    b, d = x.shape
    width = weight.shape[1]
    check(
        isinstance(conv_state, Tensor) and tuple(conv_state.shape) == (b, d, width),
        f"conv_state must be (batch={b}, dim={d}, width={width}); got {tuple(getattr(conv_state, 'shape', ()))}",
    )


def causal_conv1d_update(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None,
                         activation: str | None = None, *, backend: str = "auto") -> Tensor:
    """One decoding step of the causal conv.

    Args:
        x: (batch, dim) the new input.  conv_state: (batch, dim, width), updated IN PLACE (shift left,
        append x).  weight: (dim, width).  bias: (dim,) or None.  activation: None | "silu" | "swish".
    Returns:
        (batch, dim) in x's dtype.
    """
    check_conv_update(x, conv_state, weight, bias, activation)
    if resolve_backend("causal_conv1d_update", backend, x) == "triton":
        from .causal_conv1d_triton import causal_conv1d_update_triton

        return causal_conv1d_update_triton(x, conv_state, weight, bias, activation is not None)
    return causal_conv1d_update_ref(x, conv_state, weight, bias, activation)
