"""L2 prefetch of a decoding step's weights and recurrent states (Hopper and newer).

A decoding step at small batch is latency bound: each GEMM/GEMV of a layer waits for its weights to stream from HBM
(in_proj's 4.7 MB takes ~5 us on an H100 whatever the tile, ``bench/notes_generate.md`` design 4), and the SSM step
waits for its state. None of those bytes depend on the previous kernel's output, so they can be requested early.
``prefetch_l2(tensors, stream)`` launches one small kernel (``PROGRAMS`` programs) on a side stream that issues
``cp.async.bulk.prefetch.L2.global`` (PTX ISA 8.0, sm_90+: a non-blocking hint that brings a byte range into L2) for
each tensor; the decoder forks it at the start of layer i for the tensors layer i reads after its in_proj (conv and
SSM states, x_proj, dt_proj, A_log, out_proj) and layer i+1's norm and in_proj, so the side branch of the step's
CUDA graph runs beside layer i and the main branch then reads from L2.

A prefetch changes no value (it is a cache hint), so there is no oracle: the GPU tests check that decoding
with it gives bit-identical logits to decoding without it. ``l2_prefetch_enabled`` says when it is used:
``MAMBASEQ_L2_PREFETCH=1`` on a CUDA device of compute capability >= 9.0 with Triton. It is OFF by default:
on an H100 its first form (one program per layer) halved decoding speed, and the present form (the requests
spread over ``PROGRAMS`` programs) is slower too: 66,190 against 86,738 tok/s at batch 64 (bench/notes_generate.md,
designs 6 and 7).
"""

from __future__ import annotations

import functools
import logging
import os

import torch
from torch import Tensor

from .backend import triton_available

log = logging.getLogger("mambaseq.kernels")

MAX_TENSORS = 8  # tensors per launch (kernel arguments p0..p7)
CHUNK_BYTES = 1 << 14  # bytes per prefetch instruction (a multiple of 16)
LANES = 128  # threads of a program; each issues one chunk per loop trip
PROGRAMS = int(os.environ.get("MAMBASEQ_L2_PREFETCH_PROGRAMS", "32"))  # programs (SMs) sharing the requests


def l2_prefetch_supported(device: torch.device) -> bool:
    """True on a CUDA device of compute capability >= 9.0 (``cp.async.bulk.prefetch``) when Triton imports."""
    if device.type != "cuda" or not triton_available():
        return False
    return _capability(device.index if device.index is not None else torch.cuda.current_device()) >= (9, 0)


def l2_prefetch_enabled(device: torch.device) -> bool:
    """True where ``l2_prefetch_supported`` and the environment variable ``MAMBASEQ_L2_PREFETCH`` is ``1``
    (off by default: measured slower; ``bench/bench_generate.py`` times decoding with and without)."""
    return os.environ.get("MAMBASEQ_L2_PREFETCH", "0") == "1" and l2_prefetch_supported(device)


@functools.lru_cache(maxsize=None)
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def prefetch_ranges(tensors: list[Tensor | None]) -> list[tuple[Tensor, int]]:
    """The (uint8 view, byte count) ranges that ``prefetch_l2`` requests: each contiguous, 16-byte aligned
    tensor whole, its length rounded down to a multiple of 16 bytes; None, empty, non-contiguous or unaligned
    tensors are left out (a prefetch is only a hint). At most ``MAX_TENSORS`` ranges, in the given order."""
    out: list[tuple[Tensor, int]] = []
    for t in tensors:
        if t is None or t.numel() == 0 or not t.is_contiguous() or t.data_ptr() % 16:
            continue
        nbytes = (t.numel() * t.element_size()) // 16 * 16
        if nbytes:
            out.append((t.detach().reshape(-1).view(torch.uint8), nbytes))
        if len(out) == MAX_TENSORS:
            break
    return out


_side_streams: dict[int, torch.cuda.Stream] = {}
_warm: set[int] = set()  # devices where the kernel has compiled and run
_failed: set[int] = set()  # devices where it could not (decoding goes on without the hint)


def side_stream(device: torch.device) -> torch.cuda.Stream:
    """The side stream on which prefetches are launched (one per device, reused)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _side_streams:
        _side_streams[index] = torch.cuda.Stream(device=index)
    return _side_streams[index]


def prefetch_l2(tensors: list[Tensor | None], stream: torch.cuda.Stream) -> None:
    """Fork ``stream`` from the current stream and launch one prefetch kernel on it for ``tensors`` (see
    ``prefetch_ranges``). The caller joins ``stream`` back (``current_stream().wait_stream(stream)``) before
    it ends a CUDA-graph capture. Works inside a capture (the fork becomes a side branch of the graph)."""
    ranges = prefetch_ranges(tensors)
    if not ranges:
        return
    index = ranges[0][0].device.index
    if index in _failed:
        return
    if index not in _warm:
        if torch.cuda.is_current_stream_capturing():
            return  # the kernel would be compiled and loaded inside the capture: call warm_up() before
        warm_up(ranges[0][0].device)
    from .l2_prefetch_triton import launch_prefetch

    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        launch_prefetch(ranges, CHUNK_BYTES, LANES, PROGRAMS)


def warm_up(device: torch.device) -> None:
    """Compile and load the prefetch kernel on ``device`` (outside a CUDA-graph capture; the decoder calls it
    before it captures). A no-op where ``l2_prefetch_enabled`` is False."""
    if not l2_prefetch_enabled(device) or torch.cuda.is_current_stream_capturing():
        return
    from .l2_prefetch_triton import launch_prefetch

    t = torch.zeros(16, dtype=torch.uint8, device=device)
    try:
        launch_prefetch([(t, 16)], CHUNK_BYTES, LANES, PROGRAMS)
        torch.cuda.synchronize(t.device)
    except Exception as e:  # e.g. a Triton or driver without the PTX instruction: decode without the hint
        if t.device.index not in _failed:
            _failed.add(t.device.index)
            first = str(e).splitlines()[0] if str(e) else ""
            log.warning("L2 prefetch kernel unavailable on %s (%s: %s); decoding without it",
                        torch.cuda.get_device_name(t.device), type(e).__name__, first)
        return
    _warm.add(t.device.index)


def l2_prefetch_ready(device: torch.device) -> bool:
    """True once the prefetch kernel has compiled and run on ``device`` (``warm_up``)."""
    return (device.index if device.index is not None else torch.cuda.current_device()) in _warm
