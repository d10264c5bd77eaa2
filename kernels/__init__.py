"""Selective-scan and convolution ops: public functions, their PyTorch oracles, the CPU path and Triton kernels.

    selective_scan.py             public op: checks, layout, backend dispatch
    selective_scan_ref.py         its oracle: the per-step loop every other path is tested against
    selective_scan_cpu.py         backend="reference": chunked, segmented scan with a hand-written backward
    selective_scan_triton*.py     backend="triton": fused GPU kernels (launcher, forward, backward)
    selective_state_update*.py    one decoding step of the SSM (oracle: one step of selective_scan_ref)
    causal_conv1d*.py             the block's short convolution and its decoding update
                                  (oracle ``causal_conv1d_naive``; ``causal_conv1d_ref`` is its CPU path)
    mamba_step*.py                the block's fused decoding step and residual add + RMSNorm
    backend.py, checks.py         backend choice (auto | triton | reference, logged once); argument checks
"""

if __name__ == "kernels":
    # This folder is ``mambaseq.kernels``. Imported by the bare name ``kernels`` (a checkout's root on sys.path:
    # ``python -m ...`` or ``python -c`` run there) it would shadow the distribution of that name, Hugging Face's
    # ``kernels``, which transformers imports: hand the import over to that distribution.
    import importlib.machinery as _machinery
    import importlib.util as _util
    import os as _os
    import sys as _sys

    _root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    _spec = _machinery.PathFinder.find_spec(
        "kernels", [p for p in _sys.path if _os.path.abspath(p or _os.curdir) != _root])
    if _spec is None:
        del _sys.modules["kernels"]
        raise ModuleNotFoundError("No module named 'kernels' (this checkout's kernels/ folder is mambaseq.kernels: "
                                  "import it as that)", name="kernels")
    _module = _util.module_from_spec(_spec)
    _sys.modules["kernels"] = _module
    _spec.loader.exec_module(_module)
else:
    from .backend import BACKENDS, resolve_backend
    from .selective_scan import selective_scan
    from .selective_scan_cpu import scan_core_cpu
    from .selective_scan_ref import selective_scan_ref
    from .causal_conv1d import causal_conv1d, causal_conv1d_naive, causal_conv1d_ref, causal_conv1d_update, causal_conv1d_update_ref
    from .selective_state_update import selective_state_update, selective_state_update_ref
    from .mamba_inner import mamba_inner, mamba_inner_ref
    from .mamba_step import (add_rms_norm, add_rms_norm_linear, add_rms_norm_linear_ref, add_rms_norm_ref,
                             conv_x_proj_step, conv_x_proj_step_ref, ssm_step, ssm_step_ref)

    selective_scan_fn = selective_scan  # mamba-ssm's name, so code can switch by changing an import
    # Names before the oracle and the CPU path were split (kept for code that imports them; not in __all__):
    selective_scan_naive = selective_scan_ref  # the oracle
    scan_core_ref = scan_core_cpu  # the CPU path's scan core (it never was the oracle)

    __all__ = [
        "BACKENDS",
        "resolve_backend",
        "selective_scan",
        "selective_scan_fn",
        "selective_scan_ref",
        "scan_core_cpu",
        "causal_conv1d",
        "causal_conv1d_naive",
        "causal_conv1d_ref",
        "causal_conv1d_update",
        "causal_conv1d_update_ref",
        "selective_state_update",
        "selective_state_update_ref",
        "ssm_step",
        "ssm_step_ref",
        "conv_x_proj_step",
        "conv_x_proj_step_ref",
        "add_rms_norm_linear",
        "add_rms_norm_linear_ref",
        "add_rms_norm",
        "add_rms_norm_ref",
        "mamba_inner",
        "mamba_inner_ref",
    ]
