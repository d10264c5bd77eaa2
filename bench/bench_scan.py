"""Selective-scan benchmark on a CUDA GPU: ours (Triton) vs the peer (mamba-ssm CUDA selective_scan_fn),
forward and forward+backward, plus the single-step decoding update; each shape is checked against the
peer before it is timed. Prints a table and writes JSON under bench/results/.

    python bench/bench_scan.py [--peer /tmp/peer] [--quick] [--sweep]

The peer is found at --peer (built there by bench/build_peer.sh); without it only ours is timed, and
the table says so. Floors: bytes that must move (each input read once, each output written once) at
the measured device-to-device copy bandwidth, and special-function ops (exp; + sin, cos for complex)
at the measured rate; fwd+bwd needs them twice (the backward must recompute the decays).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import time
import types
from pathlib import Path

import torch

from mambaseq.fileio import write_json

SCAN_SHAPES = [  # (batch, dim, L, complex)
    (8, 4096, 2048, False), (2, 4096, 8192, False), (1, 1024, 131072, False), (1, 256, 1048576, False),
    (8, 4096, 2048, True), (1, 256, 1048576, True),
]
STEP_SHAPES = [(1, 4096, 16), (64, 4096, 16)]
N = 16


def load_peer(path: str | None):
    """(selective_scan_fn, selective_state_update) of the peer built at ``path``, or (None, None)."""
    if not path or not os.path.isdir(os.path.join(path, "mamba_ssm")):
        return None, None
    sys.path[:0] = [path] + glob.glob(os.path.join(path, "einops-*.whl"))
    pkg = types.ModuleType("mamba_ssm")  # skip the package __init__ (it imports the whole model zoo)
    pkg.__path__ = [os.path.join(path, "mamba_ssm")]
    sys.modules["mamba_ssm"] = pkg
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update

    return selective_scan_fn, selective_state_update


def bench(fn, rep: int = 200) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=50, rep=rep, return_mode="median"))


def bench_graph(fn, calls: int = 100, replays: int = 30) -> float:
    """Median ms per call of ``fn`` replayed from a CUDA graph of ``calls`` back-to-back calls: the GPU
    time of a decoding step without the Python/launch overhead (how a decoder run under CUDA graphs
    sees it). ``do_bench`` on a few-microsecond kernel mostly times the launch instead."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        graph.replay()
        t1.record()
        t1.synchronize()
        times.append(t0.elapsed_time(t1) / calls)
    return float(sorted(times)[len(times) // 2])


def copy_bandwidth() -> float:
    """Bytes (read + written) per second of a large device-to-device copy."""
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    return 2 * x.numel() / (ms * 1e-3)


def sfu_rate() -> float:
    """exp2 ops per second (the special-function unit), from a Triton kernel of independent chains."""
    import triton
    import triton.language as tl

    @triton.jit
    def _k(x_ptr, o_ptr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        a = tl.load(x_ptr + offs)
        b, c, d = a + 0.1, a + 0.2, a + 0.3
        for _ in range(ITERS):
            a = tl.exp2(a * -0.5)
            b = tl.exp2(b * -0.5)
            c = tl.exp2(c * -0.5)
            d = tl.exp2(d * -0.5)
        tl.store(o_ptr + offs, a + b + c + d)

    n, iters = 1 << 24, 256
    x = torch.rand(n, device="cuda")
    o = torch.empty_like(x)
    ms = bench(lambda: _k[(n // 1024,)](x, o, ITERS=iters, BLOCK=1024), rep=100)
    return 4 * iters * n / (ms * 1e-3)


def make_scan_inputs(b: int, d: int, L: int, cplx: bool, gen: torch.Generator) -> dict:
    dev, bf = "cuda", torch.bfloat16
    n = torch.arange(N, device=dev, dtype=torch.float32)
    if cplx:  # S4D-Lin; B/C in mamba-ssm's interleaved real form (batch, N, 2L), which both accept
        A = torch.complex(-0.5 * torch.ones(d, N, device=dev), math.pi * n.expand(d, N))
        Lb = 2 * L
    else:  # S4D-Real
        A = -(n + 1).expand(d, N).contiguous()
        Lb = L
    r = lambda *s: torch.randn(*s, device=dev, generator=gen)  # noqa: E731
    return dict(
        u=r(b, d, L).to(bf), delta=(0.5 * r(b, d, L) - 4.0).to(bf), A=A, B=r(b, N, Lb).to(bf),
        C=r(b, N, Lb).to(bf), D=r(d), z=r(b, d, L).to(bf), delta_bias=0.5 * r(d),
    )


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    if a.is_complex() or b.is_complex():
        a, b = torch.view_as_real(a.to(torch.complex128)), torch.view_as_real(b.to(torch.complex128))
    a, b = a.double(), b.double()
    return ((a - b).norm() / a.norm().clamp_min(1e-30)).item()


def scan_floors(b, d, L, cplx, bw, sfu) -> tuple[float, float, float, float]:
    """(bytes-floor ms, sfu-floor ms) for fwd, then for fwd+bwd."""
    bc = 2 * b * N * L * (4 if cplx else 2)  # B and C, bf16 (interleaved re/im for complex)
    fwd_bytes = 4 * b * d * L * 2 + bc  # u, delta, z read, out written
    bwd_bytes = (4 + 3) * b * d * L * 2 + 2 * bc  # u, delta, z, dout read; du, ddelta, dz; B, C + dB, dC
    ops = b * d * L * N * (3 if cplx else 1)
    return (fwd_bytes / bw * 1e3, ops / sfu * 1e3, (fwd_bytes + bwd_bytes) / bw * 1e3, 2 * ops / sfu * 1e3)


def run_scan_shape(shape, peer_fn, bw, sfu, quick: bool) -> dict:
    from mambaseq.kernels import selective_scan

    b, d, L, cplx = shape
    x = make_scan_inputs(b, d, L, cplx, torch.Generator(device="cuda").manual_seed(b * d + L))
    leaves = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    args = [x[k].requires_grad_() for k in leaves]
    g = torch.randn(b, d, L, device="cuda").to(torch.bfloat16)

    def ours():
        return selective_scan(*args[:6], z=args[6], delta_bias=args[7], delta_softplus=True, backend="triton")

    def peer():
        return peer_fn(*args[:6], z=args[6], delta_bias=args[7], delta_softplus=True)

    row = {"shape": [b, d, L], "A": "complex" if cplx else "real", "N": N, "dtype": "bf16"}
    fns = {"ours": ours} | ({"peer": peer} if peer_fn else {})
    outs = {}
    for name, fn in fns.items():  # correctness first: ours vs the peer, output and every gradient
        o = fn()
        outs[name] = [o] + list(torch.autograd.grad(o, args, g))
    if peer_fn:
        names = ["out"] + ["d" + k for k in leaves]
        row["check_vs_peer"] = {n: rel(p, o) for n, p, o in zip(names, outs["peer"], outs["ours"])}
        row["check_ok"] = all(v < 3e-2 for v in row["check_vs_peer"].values())
    del outs
    rep = 50 if quick else 200
    for name, fn in fns.items():
        row[f"{name}_fwd_ms"] = bench(lambda: fn(), rep)
        row[f"{name}_fwdbwd_ms"] = bench(lambda: torch.autograd.grad(fn(), args, g), rep)
    ff_b, ff_s, fb_b, fb_s = scan_floors(b, d, L, cplx, bw, sfu)
    row.update(floor_fwd_ms=max(ff_b, ff_s), floor_fwdbwd_ms=max(fb_b, fb_s),
               floor_fwd_bytes_ms=ff_b, floor_fwd_sfu_ms=ff_s, floor_fwdbwd_bytes_ms=fb_b, floor_fwdbwd_sfu_ms=fb_s)
    return row


def run_step_shape(shape, peer_fn, bw) -> dict:
    from mambaseq.kernels import selective_state_update

    b, d, n = shape
    gen = torch.Generator(device="cuda").manual_seed(b)
    r = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
    bf = torch.bfloat16
    st = r(b, d, n)
    x, dt, z = r(b, d).to(bf), (0.5 * r(b, d) - 4).to(bf), r(b, d).to(bf)
    A = -(torch.arange(n, device="cuda", dtype=torch.float32) + 1).expand(d, n).contiguous()
    B, C, D, bias = r(b, n).to(bf), r(b, n).to(bf), r(d), 0.5 * r(d)
    row = {"shape": [b, d, n], "op": "state_update"}
    states = {"ours": st.clone(), "peer": st.clone()}
    fns = {"ours": lambda s: selective_state_update(s, x, dt, A, B, C, D, z, bias, True, backend="triton")}
    if peer_fn:
        fns["peer"] = lambda s: peer_fn(s, x, dt, A, B, C, D, z=z, dt_bias=bias, dt_softplus=True)
        o_p, o_o = fns["peer"](states["peer"]), fns["ours"](states["ours"])
        row["check_vs_peer"] = {"out": rel(o_p, o_o), "state": rel(states["peer"], states["ours"])}
        row["check_ok"] = all(v < 3e-2 for v in row["check_vs_peer"].values())
    for name, fn in fns.items():
        s = states[name]
        row[f"{name}_ms"] = bench(lambda: fn(s))
        try:
            row[f"{name}_graph_ms"] = bench_graph(lambda: fn(s))
        except Exception as e:  # a function that cannot be captured is reported, not fatal
            row[f"{name}_graph_error"] = repr(e)[:300]
    row["floor_ms"] = 2 * b * d * n * 4 / bw * 1e3
    return row


def sweep(peer_fn, bw, sfu) -> list[dict]:
    """Time a few launch configurations of ours on two shapes (tuning aid)."""
    from mambaseq.kernels import selective_scan_triton as sst

    base = dict(sst.TUNE)
    res = []
    cfgs = json.loads(os.environ.get("SWEEP_CFGS", "null")) or [
        {}, {"tile_f": 1024}, {"tile_f": 1024, "wf": 4}, {"tile_f": 2048, "wf": 4}, {"tile_f": 256},
        {"tile_b": 512}, {"tile_b": 512, "wb": 8}, {"tile_b": 128}, {"waves": 4}, {"waves": 16}]
    for cfg in cfgs:
        sst.TUNE.update(base | cfg)
        idx = [int(i) for i in os.environ.get("SWEEP_SHAPES", "0,3").split(",")]
        for shape in [SCAN_SHAPES[i] for i in idx]:
            try:
                r = run_scan_shape(shape, None, bw, sfu, quick=True)
                res.append({"cfg": cfg, "shape": shape, "fwd": r["ours_fwd_ms"], "fwdbwd": r["ours_fwdbwd_ms"]})
            except Exception as e:  # a config that fails to compile is reported, not fatal
                res.append({"cfg": cfg, "shape": shape, "error": repr(e)[:300]})
            print("sweep", res[-1], flush=True)
    sst.TUNE.clear()
    sst.TUNE.update(base)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", default=os.environ.get("MAMBASEQ_PEER", "/tmp/peer"),
                    help="folder holding the built peer (mamba_ssm/, selective_scan_cuda*.so)")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--sweep", action="store_true", help="also time a few launch configurations of ours")
    ap.add_argument("--only", default="", help="comma list of shape indexes to run (default all)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="JSON folder")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_scan: needs a CUDA GPU", file=sys.stderr)
        return 2
    scan_peer, step_peer = load_peer(a.peer)
    print(f"peer: {'mamba-ssm 2.3.2.post1 from ' + a.peer if scan_peer else 'NOT FOUND (timing ours only)'}")
    bw, sfu = copy_bandwidth(), sfu_rate()
    print(f"device {torch.cuda.get_device_name()}: copy {bw / 1e12:.2f} TB/s, exp2 {sfu / 1e12:.2f} Tops/s")
    only = {int(i) for i in a.only.split(",") if i}
    rows = []
    for i, shape in enumerate(SCAN_SHAPES):
        if only and i not in only:
            continue
        rows.append(run_scan_shape(shape, scan_peer, bw, sfu, a.quick))
        print(json.dumps(rows[-1]), flush=True)
    steps = [run_step_shape(s, step_peer, bw) for s in STEP_SHAPES]
    sweeps = sweep(scan_peer, bw, sfu) if a.sweep else []
    hdr = f"{'shape (b,d,L)':>20} {'A':>7} | {'ours fwd':>8} {'peer':>7} {'x':>5} {'%floor':>6} | " \
          f"{'ours f+b':>8} {'peer':>7} {'x':>5} {'%floor':>6} | check"
    lines = [hdr, "-" * len(hdr)]
    for r in rows:
        pf, pb = r.get("peer_fwd_ms"), r.get("peer_fwdbwd_ms")
        lines.append(
            f"{str(tuple(r['shape'])):>20} {r['A']:>7} | {r['ours_fwd_ms']:8.3f} {pf or float('nan'):7.3f} "
            f"{(pf or math.nan) / r['ours_fwd_ms']:5.2f} {100 * r['floor_fwd_ms'] / r['ours_fwd_ms']:5.0f}% | "
            f"{r['ours_fwdbwd_ms']:8.3f} {pb or float('nan'):7.3f} {(pb or math.nan) / r['ours_fwdbwd_ms']:5.2f} "
            f"{100 * r['floor_fwdbwd_ms'] / r['ours_fwdbwd_ms']:5.0f}% | "
            f"{'ok' if r.get('check_ok') else ('n/a' if 'check_ok' not in r else 'MISMATCH')} "
            f"(out {r.get('check_vs_peer', {}).get('out', math.nan):.1e})")
    lines.append("x = peer ms / ours ms (>1: ours faster).  %floor = max(bytes, exp) floor / ours.")
    for r in steps:
        lines.append(f"step update b={r['shape'][0]} d={r['shape'][1]} N={r['shape'][2]}: ours "
                     f"{r['ours_ms'] * 1e3:.1f} us, peer {r.get('peer_ms', math.nan) * 1e3:.1f} us (launched); "
                     f"CUDA graph: ours {r.get('ours_graph_ms', math.nan) * 1e3:.2f} us, peer "
                     f"{r.get('peer_graph_ms', math.nan) * 1e3:.2f} us; bytes floor "
                     f"{r['floor_ms'] * 1e3:.2f} us, check {'ok' if r.get('check_ok') else 'n/a/MISMATCH'}")
    print("\n".join(lines))
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    doc = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "time_utc": stamp,
           "copy_bytes_per_s": bw, "sfu_ops_per_s": sfu, "peer": bool(scan_peer), "scan": rows,
           "step": steps, "sweep": sweeps, "table": lines}
    path = write_json(doc, out_dir / f"scan_{stamp}.json", indent=1)  # atomic: never a half-written result
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
