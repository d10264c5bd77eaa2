"""The Mamba block (Gu & Dao 2023, Fig. 3): in_proj -> causal conv -> SiLU -> selective SSM -> * SiLU(z) -> out_proj.

Real-valued (S4D-Real init, A_n = -(n+1)) and complex-valued (S4D-Lin init, A_n = -1/2 + i*pi*n, complex
input-dependent B/C, output 2*Re(C h)) variants; all parameters are stored as real tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mambaseq.kernels import (causal_conv1d, conv_x_proj_step, mamba_inner, resolve_backend, selective_scan,
                              ssm_step)
from mambaseq.kernels.mamba_step import HALF_STATE_DTYPES, REAL_STATE_DTYPES


def check_ssm_state_dtype(ssm_state_dtype, complex_ssm: bool) -> torch.dtype:
    """The recurrent SSM state's dtype for ``ssm_state_dtype`` (None: float32, complex64 if complex); raises
    ValueError naming the argument for a dtype the decoding kernels do not keep a state in."""
    if ssm_state_dtype is None:
        return torch.complex64 if complex_ssm else torch.float32
    allowed = (torch.complex64,) if complex_ssm else REAL_STATE_DTYPES
    if ssm_state_dtype not in allowed:
        hint = " (a torch.dtype, not a string)" if isinstance(ssm_state_dtype, str) else ""
        raise ValueError(f"ssm_state_dtype must be None or one of {', '.join(map(str, allowed))} for a "
                         f"{'complex' if complex_ssm else 'real'} SSM{hint}; got {ssm_state_dtype!r}")
    return ssm_state_dtype


@dataclass
class MambaCache:
    """Recurrent state of one Mamba block: O(1) in sequence length.

    conv_state: (batch, d_inner, d_conv) last conv inputs, oldest first;
    ssm_state:  (batch, d_inner, d_state) fp32 (complex64 for complex SSMs), or bf16/fp16 when allocated
                with ``ssm_state_dtype`` (real SSMs: mamba-ssm keeps it in the model's dtype).
    """

    conv_state: Tensor
    ssm_state: Tensor


def _fp32_state(state: Tensor) -> Tensor:
    """A bf16/fp16 cached state as fp32 for the scan (which carries its state in fp32); others as they are."""
    return state.float() if state.dtype in HALF_STATE_DTYPES else state


class Mamba(nn.Module):
    """Drop-in for mamba-ssm's ``Mamba``: maps (batch, length, d_model) -> (batch, length, d_model).

    Keyword-only extras: ``complex`` (complex-valued SSM) and ``backend`` (auto | triton | reference).
    Where the backend resolves to Triton (CUDA tensors, or ``backend="triton"`` under TRITON_INTERPRET=1), a
    forward without a cache runs the fused block (``mamba_inner``); with a cache (chunked prefill) it runs
    the separate conv and scan kernels, which carry state in and out.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_fast_path: bool = True,
        layer_idx: int | None = None,
        device=None,
        dtype=None,
        *,
        complex: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.complex = complex
        self.backend = backend
        self.layer_idx = layer_idx
        self.use_fast_path = use_fast_path  # kept for signature compatibility; the backend decides

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **fk)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1, bias=conv_bias, **fk
        )
        n_bc = 4 * d_state if complex else 2 * d_state  # complex B, C carry real and imaginary parts
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + n_bc, bias=False, **fk)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **fk)

        # dt_proj: weight keeps the dt variance; bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]
        std = self.dt_rank**-0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        dt = torch.exp(
            torch.rand(self.d_inner, device=device) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.dt_proj.bias._no_reinit = True

        n = torch.arange(d_state, dtype=torch.float32, device=device)
        if complex:  # S4D-Lin: A_n = -1/2 + i*pi*n
            self.A_log = nn.Parameter(torch.full((self.d_inner, d_state), math.log(0.5), device=device))
            self.A_imag = nn.Parameter((math.pi * n).repeat(self.d_inner, 1))
            self.A_imag._no_weight_decay = True
        else:  # S4D-Real: A_n = -(n + 1)
            self.A_log = nn.Parameter(torch.log(n + 1).repeat(self.d_inner, 1))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True
        self.dt_proj.bias._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **fk)

    # ------------------------------------------------------------------ helpers
    def A(self) -> Tensor:
        """(d_inner, d_state) float32, or complex64 for complex SSMs."""
        re = -torch.exp(self.A_log.float())
        return torch.complex(re, self.A_imag.float()) if self.complex else re

    def _ssm_inputs(self, x_dbl: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x_proj output (..., dt_rank + n_bc) -> dt (..., d_inner), B, C (..., N) real or complex."""
        N = self.d_state
        dt, bc = x_dbl.split([self.dt_rank, x_dbl.shape[-1] - self.dt_rank], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # bias goes to the scan as delta_bias (fp32)
        if self.complex:
            Br, Bi, Cr, Ci = bc.float().split(N, dim=-1)
            return dt, torch.complex(Br, Bi), torch.complex(Cr, Ci)
        B, C = bc.split(N, dim=-1)
        return dt, B, C

    def allocate_cache(self, batch_size: int, device=None, dtype=None, ssm_state_dtype=None) -> MambaCache:
        """Zero recurrent state for ``batch_size`` sequences. conv_state in ``dtype`` (default: the weights');
        ssm_state in ``ssm_state_dtype``: None means full precision, float32 (complex64 for a complex SSM);
        a real SSM also takes torch.bfloat16 or torch.float16 (half the state traffic a decoding step; what
        mamba-ssm's cache does for a bf16 model; the update is computed in fp32 and rounded when stored).
        Raises ValueError for another ``ssm_state_dtype``."""
        device = device or self.in_proj.weight.device
        dtype = dtype or self.in_proj.weight.dtype
        sdt = check_ssm_state_dtype(ssm_state_dtype, self.complex)
        return MambaCache(
            conv_state=torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=dtype),
            ssm_state=torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=sdt),
        )

    # ------------------------------------------------------------------ parallel
    def forward(self, hidden_states: Tensor, cache: MambaCache | None = None) -> Tensor:
        """hidden_states (batch, L, d_model) -> (batch, L, d_model).

        With ``cache`` (prefill): the chunk continues from the cached state (conv inputs and SSM state; a
        freshly allocated cache is the zero state), and the cache then holds the state after the chunk, so a
        long prompt can be fed in pieces. Raises ValueError if the cache was allocated for another batch size.
        """
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(
                f"Mamba expects (batch, length, d_model={self.d_model}); got {tuple(hidden_states.shape)}"
            )
        b, L, _ = hidden_states.shape
        if cache is not None and cache.conv_state.shape[0] != b:
            raise ValueError(f"cache was allocated for batch size {cache.conv_state.shape[0]}, "
                             f"but the input has batch size {b}")
        if cache is None and resolve_backend("mamba_inner", self.backend, hidden_states) == "triton":
            return self._forward_fused(hidden_states)
        if hidden_states.is_cuda:
            xz = self.in_proj(hidden_states).transpose(1, 2)  # (b, 2*d_inner, L)
            x, z = xz.chunk(2, dim=1)
        else:  # two products, not one + chunk: the backward then needs no concatenated (b, L, 2*d_inner) copy
            w, bias, di = self.in_proj.weight, self.in_proj.bias, self.d_inner
            x = F.linear(hidden_states, w[:di], None if bias is None else bias[:di]).transpose(1, 2)
            z = F.linear(hidden_states, w[di:], None if bias is None else bias[di:]).transpose(1, 2)
        w = self.conv1d.weight.squeeze(1)  # (d_inner, d_conv)
        if cache is None:
            x = causal_conv1d(x, w, self.conv1d.bias, activation="silu", backend=self.backend)
        else:  # continue the conv from the cached inputs; keep the last d_conv inputs for the next call
            k = self.d_conv - 1
            xh = torch.cat([cache.conv_state.to(x.dtype), x], dim=2)  # (b, d_inner, d_conv + L)
            cache.conv_state.copy_(xh[:, :, -self.d_conv :])
            x = causal_conv1d(xh[:, :, 1:], w, self.conv1d.bias, activation="silu", backend=self.backend)[:, :, k:]
        x_dbl = self.x_proj(x.transpose(1, 2))  # (b, L, dt_rank + n_bc)
        dt, B, C = self._ssm_inputs(x_dbl)
        y = selective_scan(
            x,
            dt.transpose(1, 2),
            self.A(),
            B.transpose(1, 2),
            C.transpose(1, 2),
            self.D.float(),
            z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            return_last_state=cache is not None,
            initial_state=None if cache is None else _fp32_state(cache.ssm_state),
            backend=self.backend,
        )
        if cache is not None:
            y, last = y
            cache.ssm_state.copy_(last)
        return self.out_proj(y.transpose(1, 2))

    def _forward_fused(self, hidden_states: Tensor) -> Tensor:
        """The Triton path without a cache: in_proj, then the whole rest of the block as one fused op that
        keeps the (b, L, channels) layout and recomputes conv output, delta and the gated output in its
        backward (``mambaseq.kernels.mamba_inner``)."""
        xz = self.in_proj(hidden_states)  # (b, L, 2*d_inner); bf16 under autocast, the projections' dtype
        return mamba_inner(xz, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.x_proj.weight,
                           self.dt_proj.weight, self.dt_proj.bias, self.A(), self.D, self.out_proj.weight,
                           self.out_proj.bias, backend=self.backend)

    # ------------------------------------------------------------------ recurrent
    def step(self, hidden_states: Tensor, cache: MambaCache) -> Tensor:
        """One token: (batch, d_model) -> (batch, d_model); updates ``cache`` in place."""
        if hidden_states.dim() != 2 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"Mamba.step expects (batch, d_model={self.d_model}); got {tuple(hidden_states.shape)}")
        return self.step_xz(self.in_proj(hidden_states), cache)

    def step_xz(self, xz: Tensor, cache: MambaCache) -> Tensor:
        """One token from in_proj's output: xz (batch, 2 * d_inner) -> (batch, d_model); updates ``cache``.
        (The backbone's step fuses the pre-norm with in_proj, ``add_rms_norm_linear``, and enters here.)"""
        if cache.conv_state.shape[0] != xz.shape[0]:
            raise ValueError(f"cache was allocated for batch size {cache.conv_state.shape[0]}, "
                             f"but the input has batch size {xz.shape[0]}")
        x, z = xz.chunk(2, dim=-1)  # (b, d_inner) views, no copy
        # conv update + SiLU + x_proj: one fused op (one kernel on the GPU, x_proj as partial sums)
        x, x_dbl = conv_x_proj_step(x, cache.conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias,
                                    self.x_proj.weight, backend=self.backend)
        # dt_proj, softplus, the state update, D skip and SiLU(z) gate: one fused op (one kernel on the GPU)
        y = ssm_step(cache.ssm_state, x, x_dbl, z, self.dt_proj.weight, self.dt_proj.bias, self.A_log,
                     self.D, self.A_imag if self.complex else None, backend=self.backend)
        return self.out_proj(y)
