"""Selective-scan and convolution ops: public functions, their PyTorch references, Triton kernels."""

from .backend import BACKENDS, resolve_backend
from .selective_scan import selective_scan
from .selective_scan_ref import scan_core_ref, selective_scan_naive
from .causal_conv1d import causal_conv1d, causal_conv1d_naive, causal_conv1d_ref, causal_conv1d_update, causal_conv1d_update_ref
from .selective_state_update import selective_state_update, selective_state_update_ref
from .mamba_inner import mamba_inner, mamba_inner_ref
from .mamba_step import add_rms_norm, add_rms_norm_ref, ssm_step, ssm_step_ref

selective_scan_fn = selective_scan  # mamba-ssm's name, so code can switch by changing an import

__all__ = [
    "BACKENDS",
    "resolve_backend",
    "selective_scan",
    "selective_scan_fn",
    "selective_scan_naive",
    "scan_core_ref",
    "causal_conv1d",
    "causal_conv1d_naive",
    "causal_conv1d_ref",
    "causal_conv1d_update",
    "causal_conv1d_update_ref",
    "selective_state_update",
    "selective_state_update_ref",
    "ssm_step",
    "ssm_step_ref",
    "add_rms_norm",
    "add_rms_norm_ref",
    "mamba_inner",
    "mamba_inner_ref",
]
