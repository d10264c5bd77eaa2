"""Block sizes of the decode-step kernels (kernels/mamba_step_triton.py) on this GPU: microseconds per call of
``conv_x_proj_step`` and ``ssm_step`` (x_proj partial sums) for each candidate (rows, channels, warps), and of
the unfused path they replace (conv update, x_proj Linear, ssm_step on x_proj's output), at the issue-13 LM's
layer (d_inner 1536, N 16, dt_rank 48, bf16) and batch 1, 16 and 64; and, up to batch 4, the pre-norm + in_proj
kernel against add_rms_norm + cuBLAS.

    python bench/tune_step.py [--batches 1 16 64] [--out PATH]

Each time is one CUDA graph of 50 back-to-back calls (so launch latency from Python does not count), median of
20 replays. Prints a table per batch and writes JSON (default bench/results/tune_step_<time>.json).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_scan import bench_graph  # noqa: E402

from mambaseq.fileio import write_json  # noqa: E402
from mambaseq.kernels import add_rms_norm, causal_conv1d_update, conv_x_proj_step, ssm_step  # noqa: E402
from mambaseq.kernels.mamba_step_triton import (add_rms_norm_linear_triton, conv_x_proj_step_triton,  # noqa: E402
                                                ssm_step_triton)

D_MODEL, D_INNER, N, R, W = 768, 1536, 16, 48, 4
NORM_LINEAR = [(8, 256, 4), (16, 128, 4), (16, 256, 4), (16, 256, 2), (32, 128, 4), (32, 256, 8), (8, 512, 4),
               (16, 512, 8)]
CONV_SMALL = [(1, 16, 1), (1, 32, 1), (1, 32, 2), (1, 32, 4), (1, 64, 4), (2, 32, 4)]
CONV_LARGE = [(16, 64, 4), (16, 128, 4), (16, 128, 8), (32, 64, 4), (32, 128, 4), (64, 64, 4), (64, 128, 8)]
SSM = [(bd, w) for bd in (16, 32, 64, 128, 256) for w in (1, 2, 4, 8) if bd * N // w >= 32]


def per_call_us(fn) -> float:
    """Microseconds per call, from a CUDA graph of 50 back-to-back calls (``bench_scan.bench_graph``)."""
    return bench_graph(fn, calls=50, replays=20) * 1e3


def sweep(call, blocks: list) -> dict:
    """{str(block): us per call of call(block)}; a block that fails to compile is reported, not fatal."""
    out = {}
    for blk in blocks:
        try:
            out[str(blk)] = per_call_us(lambda: call(blk))
        except Exception as e:
            out[str(blk)] = f"{type(e).__name__}: {str(e)[:80]}"
    return out


def tune(b: int) -> dict:
    g = torch.Generator(device="cuda").manual_seed(b)
    bf = torch.bfloat16

    def rn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, device="cuda") * scale).to(bf)

    xz = rn(b, 2 * D_INNER)
    x, z = xz[:, :D_INNER], xz[:, D_INNER:]
    conv_w, conv_b, xw = rn(D_INNER, W, scale=0.5), rn(D_INNER), rn(R + 2 * N, D_INNER, scale=D_INNER ** -0.5)
    dt_w, dt_b = rn(D_INNER, R, scale=R ** -0.5), rn(D_INNER)
    A_log, D = rn(D_INNER, N, scale=0.5), rn(D_INNER)
    cs = rn(b, D_INNER, W)
    state = torch.randn(b, D_INNER, N, generator=g, device="cuda")
    res: dict = {"batch": b}

    def unfused():
        xc = causal_conv1d_update(x, cs, conv_w, conv_b, activation="silu", backend="triton")
        return ssm_step(state, xc, F.linear(xc, xw), z, dt_w, dt_b, A_log, D, backend="triton")

    xc0 = causal_conv1d_update(x, cs.clone(), conv_w, conv_b, activation="silu", backend="triton")
    res["unfused_conv_us"] = per_call_us(lambda: causal_conv1d_update(x, cs, conv_w, conv_b, activation="silu",
                                                                      backend="triton"))
    res["unfused_x_proj_us"] = per_call_us(lambda: F.linear(xc0, xw))
    xd0 = F.linear(xc0, xw)
    res["unfused_ssm_us"] = per_call_us(lambda: ssm_step(state, xc0, xd0, z, dt_w, dt_b, A_log, D, backend="triton"))
    res["unfused_total_us"] = per_call_us(unfused)
    res["conv_x_proj_us"] = sweep(lambda blk: conv_x_proj_step_triton(x, cs, conv_w, conv_b, xw, blocks=blk),
                                  CONV_SMALL if b < 16 else CONV_SMALL[-3:] + CONV_LARGE)
    _, part = conv_x_proj_step_triton(x, cs.clone(), conv_w, conv_b, xw)
    res["ssm_partial_us"] = sweep(lambda blk: ssm_step_triton(state, xc0, part, z, dt_w, dt_b, A_log, D, None,
                                                              blocks=blk), SSM)
    if b >= 16:  # above MAX_FUSED_X_PROJ_ROWS the op feeds ssm_step x_proj's (b, E) output
        res["ssm_us"] = sweep(lambda blk: ssm_step_triton(state, xc0, xd0, z, dt_w, dt_b, A_log, D, None, blocks=blk),
                              SSM)
    res["ssm_partial_default_us"] = per_call_us(lambda: ssm_step_triton(state, xc0, part, z, dt_w, dt_b, A_log, D,
                                                                        None))
    if b <= 4:  # pre-norm + in_proj: add_rms_norm and cuBLAS vs one kernel; out_proj for scale
        h, resid = rn(b, D_MODEL), rn(b, D_MODEL)
        nw, w_in, w_out = rn(D_MODEL), rn(2 * D_INNER, D_MODEL, scale=D_MODEL ** -0.5), rn(D_MODEL, D_INNER)
        res["unfused_norm_in_proj_us"] = per_call_us(
            lambda: F.linear(add_rms_norm(h, resid, nw, 1e-5, backend="triton")[0], w_in))
        res["out_proj_cublas_us"] = per_call_us(lambda: F.linear(xc0, w_out))
        res["norm_linear_us"] = sweep(lambda blk: add_rms_norm_linear_triton(h, resid, nw, 1e-5, w_in, None,
                                                                             blocks=blk), NORM_LINEAR)
    res["fused_default_total_us"] = per_call_us(  # the public ops, as Mamba.step calls them
        lambda: ssm_step(state, *conv_x_proj_step(x, cs, conv_w, conv_b, xw, backend="triton"), z, dt_w, dt_b, A_log,
                         D, backend="triton"))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("tune_step: needs a CUDA GPU")
    rows = []
    for b in a.batches:
        r = tune(b)
        rows.append(r)
        best = {k: min(((v, blk) for blk, v in r[k].items() if isinstance(v, float)), default=None)
                for k in ("conv_x_proj_us", "ssm_partial_us", "norm_linear_us", "ssm_us") if k in r}
        print(f"b={b}: unfused conv {r['unfused_conv_us']:.2f} + x_proj {r['unfused_x_proj_us']:.2f} + ssm "
              f"{r['unfused_ssm_us']:.2f} = {r['unfused_total_us']:.2f} us (one graph); fused default "
              f"{r['fused_default_total_us']:.2f} us; ssm default {r['ssm_partial_default_us']:.2f}; best conv_x_proj "
              f"{best['conv_x_proj_us']}; best ssm {best['ssm_partial_us']}", flush=True)
        if "norm_linear_us" in r:
            print(f"    norm + in_proj unfused {r['unfused_norm_in_proj_us']:.2f} us, fused best "
                  f"{best['norm_linear_us']}; out_proj cuBLAS {r['out_proj_cublas_us']:.2f} us", flush=True)
        if "ssm_us" in r:
            print(f"    ssm on x_proj's output: best {best['ssm_us']}", flush=True)
        for k in ("conv_x_proj_us", "ssm_partial_us", "norm_linear_us", "ssm_us"):
            if k not in r:
                continue
            print("   ", k, {blk: (round(v, 2) if isinstance(v, float) else v) for blk, v in r[k].items()}, flush=True)
    out = Path(a.out or ROOT / "bench" / "results" / f"tune_step_{time.strftime('%Y%m%d-%H%M%S')}.json")
    write_json({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
