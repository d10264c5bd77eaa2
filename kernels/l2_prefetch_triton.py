"""Triton kernel of ``l2_prefetch``: ``programs`` programs whose threads issue ``cp.async.bulk.prefetch.L2.global``
(sm_90+) over up to eight byte ranges, one ``CHUNK``-byte request per thread per loop trip. Spread over many
programs because each SM's bulk-copy unit serves its requests in turn: one program prefetching a layer's ~14 MB
took ~60 us on an H100 (2026-12-07)."""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _prefetch_range(p, nbytes, lane, CHUNK: tl.constexpr, LANES: tl.constexpr):
    # program g's threads take chunks g*LANES .. g*LANES + LANES - 1, then every PROGRAMS*LANES-th after
    step = tl.num_programs(0) * LANES * CHUNK
    for start in range(tl.program_id(0) * LANES * CHUNK, nbytes, step):
        off = start + lane.to(tl.int64) * CHUNK
        size = tl.maximum(tl.minimum(nbytes - off, CHUNK), 0).to(tl.int32)
        addr = (p + off).to(tl.int64, bitcast=True)
        tl.inline_asm_elementwise(
            "{ .reg .pred q; setp.gt.s32 q, $2, 0; @q cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0; }",
            "=r,l,r", [addr, size], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _l2_prefetch_kernel(p0, n0, p1, n1, p2, n2, p3, n3, p4, n4, p5, n5, p6, n6, p7, n7,
                        CHUNK: tl.constexpr, LANES: tl.constexpr):
    lane = tl.arange(0, LANES)  # empty slots have 0 bytes: their loops run no trip
    _prefetch_range(p0, n0, lane, CHUNK, LANES)
    _prefetch_range(p1, n1, lane, CHUNK, LANES)
    _prefetch_range(p2, n2, lane, CHUNK, LANES)
    _prefetch_range(p3, n3, lane, CHUNK, LANES)
    _prefetch_range(p4, n4, lane, CHUNK, LANES)
    _prefetch_range(p5, n5, lane, CHUNK, LANES)
    _prefetch_range(p6, n6, lane, CHUNK, LANES)
    _prefetch_range(p7, n7, lane, CHUNK, LANES)


def launch_prefetch(ranges: list[tuple[Tensor, int]], chunk: int, lanes: int, programs: int) -> None:
    """ranges: 1..8 (uint8 tensor, byte count) pairs from ``l2_prefetch.prefetch_ranges``."""
    nr = len(ranges)
    args: list = []
    for i in range(8):  # unused slots repeat the last range with 0 bytes: one compiled kernel for any count
        t, n = ranges[min(i, nr - 1)]
        args += [t, n if i < nr else 0]
    _l2_prefetch_kernel[(programs,)](*args, CHUNK=chunk, LANES=lanes, num_warps=max(1, lanes // 32))
