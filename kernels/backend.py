"""Explicit backend choice for every fused op: ``auto`` | ``triton`` | ``reference``.

``auto`` picks Triton for CUDA tensors (or under ``TRITON_INTERPRET=1``, which runs Triton on the CPU)
when Triton imports, the PyTorch reference otherwise, and logs the choice once per op — there is no
silent fallback: asking for ``triton`` where it cannot run raises.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os

import torch

log = logging.getLogger("mambaseq.kernels")

BACKENDS = ("auto", "triton", "reference")
_logged: set[tuple[str, str, str]] = set()


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


@functools.lru_cache(maxsize=None)
def num_sms(index: int) -> int:
    """Streaming multiprocessors of CUDA device ``index`` (launch heuristics size their grids by it)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(op: str, backend: str, tensor: torch.Tensor) -> str:
    """Return ``"triton"`` or ``"reference"`` for ``op`` on ``tensor``'s device, or raise ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    can_triton = triton_available() and (tensor.is_cuda or triton_interpret())
    if backend == "triton":
        if not triton_available():
            raise ValueError(f"{op}: backend='triton' but the triton package is not installed")
        if not can_triton:
            raise ValueError(
                f"{op}: backend='triton' needs CUDA tensors (got device {tensor.device}); "
                "set TRITON_INTERPRET=1 to run the Triton kernels in the CPU interpreter, "
                "or use backend='reference'"
            )
        chosen = "triton"
    elif backend == "reference":
        chosen = "reference"
    else:
        # The interpreter is for testing kernels, not a speed-up: auto uses it only on CUDA tensors.
        chosen = "triton" if (triton_available() and tensor.is_cuda) else "reference"
    key = (op, backend, f"{tensor.device.type}:{chosen}")
    if key not in _logged:
        _logged.add(key)
        log.info("%s: backend=%s on %s -> %s", op, backend, tensor.device.type, chosen)
    return chosen
