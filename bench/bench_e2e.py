"""End-to-end GPU benchmark of the Mamba block (issue 12): mambaseq vs the peer (mamba-ssm 2.3.2.post1 +
causal-conv1d 1.7.0) in the same run. Prints a table and writes JSON under bench/results/ (and $OUT).

    python bench/bench_e2e.py run [--sides ours,peer] [--peer /tmp/peer] [--only NAME ...] [--name FILE]
    python bench/bench_e2e.py table A.json B.json ... [--name FILE]      # merge runs into one table
    python bench/bench_e2e.py profile [--side ours] [--only NAME]         # torch profiler, one step
    python bench/bench_e2e.py conv                                        # conv-backward tile sweep
    python bench/bench_e2e.py run --quick --device cpu                    # dry run of the script

Rows (the issue's table): the 90.5M LM (d_model 768 x 24 layers, vocab 16, d_state 16, expand 2) trained at
batch 8 x 2048 and 1 x 131072 tokens; the 6 x 128 model at batch 1 and 8 x 2^20 tokens, forward only and one
training step. Both sides: fp32 parameters + bf16 autocast, next-token cross-entropy, fused AdamW, random
bases (speed does not depend on the data). Each (side, row) runs in its own process (a clean allocator; an
out-of-memory cannot spoil the next row). Reported: median step time over the timed steps (after warm-up
steps that include Triton compilation), tokens/s = batch x L / step, and torch.cuda.max_memory_allocated
(parameters, gradients and optimizer state included). The peer is found at --peer (built there by
bench/build_peer.sh); without it only ours is timed and the table says "peer absent" with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TAG = "RESULT "
LM = dict(d_model=768, n_layer=24)
SMALL = dict(d_model=128, n_layer=6)
ROWS = {  # name: (model, mode, batch, L, warm-up steps, timed steps)
    "lm_train_b8_L2048": (LM, "train", 8, 2048, 3, 10),
    "lm_train_b1_L131072": (LM, "train", 1, 131072, 2, 5),
    "small_fwd_b1_L1M": (SMALL, "fwd", 1, 1 << 20, 2, 5),
    "small_fwd_b8_L1M": (SMALL, "fwd", 8, 1 << 20, 1, 3),
    "small_train_b1_L1M": (SMALL, "train", 1, 1 << 20, 2, 4),
    "small_train_b8_L1M": (SMALL, "train", 8, 1 << 20, 1, 3),
}
QUICK = {"lm_train_b8_L2048": (dict(d_model=32, n_layer=2), "train", 2, 64, 1, 2),
         "small_fwd_b1_L1M": (dict(d_model=16, n_layer=2), "fwd", 1, 256, 1, 2)}


# ------------------------------------------------------------------------------------------- one row
def _models(side: str, spec: dict, device, peer_path: str | None):
    """(model, forward(ids) -> logits) for one side; fp32 parameters."""
    import torch

    if side == "ours":
        from mambaseq import MambaConfig, MambaLMHeadModel

        cfg = MambaConfig(vocab_size=16, d_state=16, expand=2, **spec)
        m = MambaLMHeadModel(cfg).to(device)
        return m, m
    sys.path.insert(0, str(HERE))
    from bench_generate import load_peer  # the peer's import dance lives there (one place)

    classes, note = load_peer(peer_path)
    if classes is None:
        raise RuntimeError(f"peer absent: {note}")
    PeerLM, PeerConfig = classes
    cfg = PeerConfig(vocab_size=16, ssm_cfg={"layer": "Mamba1", "d_state": 16, "expand": 2}, rms_norm=True,
                     residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8, tie_embeddings=True,
                     **spec)
    m = PeerLM(cfg, device=device, dtype=torch.float32)
    return m, (lambda ids: m(ids).logits)


def run_row(side: str, name: str, rows: dict, device_name: str, peer_path: str | None, timed_ctx=None) -> dict:
    """Time one row in THIS process -> dict (step_ms, tokens_per_s, peak GiB, or the error). ``timed_ctx``:
    a context manager entered around the timed steps only (the profiler)."""
    import contextlib

    import torch
    import torch.nn.functional as F

    spec, mode, b, L, warm, steps = rows[name]
    dev = torch.device(device_name)
    cuda = dev.type == "cuda"
    row = {"side": side, "row": name, "mode": mode, "batch": b, "L": L, **spec}
    torch.manual_seed(0)
    try:
        model, fwd = _models(side, spec, dev, peer_path)
        row["n_params"] = sum(p.numel() for p in model.parameters())
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda or None) if mode == "train" else None
        x = torch.randint(0, 4, (b, L + 1), device=dev)
        amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda)

        def step():
            if mode == "fwd":
                with torch.no_grad(), amp:
                    return fwd(x[:, :-1])
            with amp:
                logits = fwd(x[:, :-1])
            loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        times = []
        timed = contextlib.ExitStack()
        for i in range(warm + steps):
            if i == warm and timed_ctx is not None:
                timed.enter_context(timed_ctx)
            if cuda:
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            out = step()
            if cuda:
                torch.cuda.synchronize(dev)
            dt = time.perf_counter() - t0
            del out
            if i >= warm:
                times.append(dt)
            elif i == 0:
                row["first_step_s"] = dt
        timed.close()
        med = statistics.median(times)
        row.update(step_ms=1e3 * med, tokens_per_s=b * L / med, step_ms_all=[1e3 * t for t in times])
    except torch.OutOfMemoryError as e:
        row.update(error="out of memory", detail=str(e).splitlines()[0][:200])
    except Exception as e:  # a broken side must not stop the other rows; the table shows the error
        row.update(error=f"{type(e).__name__}: {str(e)[:300]}")
    if cuda:
        row["peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    return row


def profile_row(side: str, name: str, rows: dict, device_name: str, peer_path: str | None, out: Path) -> None:
    """torch.profiler over one training/forward step after warm-up: top kernels by GPU time -> text file."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    spec, mode, b, L, _, _ = rows[name]
    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
    run_row(side, name, {name: (spec, mode, b, L, 2, 1)}, device_name, peer_path, timed_ctx=prof)
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=60)
    out.write_text(table)
    print(table[:6000])


def conv_sweep(device_name: str) -> list[dict]:
    """Time the time-major conv backward (the fused block's) at the LM's layer shape, b 8 x L 2048 x d_inner
    1536 bf16 (x read from a (b, L, 2 d_inner) buffer), for several (time rows, channels, warps) tiles."""
    import torch
    from triton.testing import do_bench

    from mambaseq.kernels import mamba_inner_triton as mit

    b, L, d = 8, 2048, 1536
    dev = torch.device(device_name)
    xz = torch.randn(b, L, 2 * d, device=dev, dtype=torch.bfloat16)
    w, bias = torch.randn(d, 4, device=dev), torch.randn(d, device=dev)
    g1, g2 = torch.randn(b, L, d, device=dev, dtype=torch.bfloat16), torch.randn(b, L, d, device=dev,
                                                                                 dtype=torch.bfloat16)
    dxz = torch.empty_like(xz)
    out, saved = [], dict(mit.CONV_TUNE)
    ref = None
    try:
        for tile in [(32, 128, 4), (16, 128, 4), (32, 64, 4), (64, 64, 4), (64, 128, 8), (16, 64, 2)]:
            mit.CONV_TUNE["bwd"] = tile
            dw, _ = mit.conv_tm_backward(xz[..., :d], w, bias, g1, g2, dxz[..., :d])
            dx = dxz[..., :d].float()
            ref = (dx, dw) if ref is None else ref
            same = bool(torch.allclose(dx, ref[0], rtol=1e-2, atol=1e-2) and torch.allclose(dw, ref[1], rtol=1e-3, atol=1e-2))
            ms = do_bench(lambda: mit.conv_tm_backward(xz[..., :d], w, bias, g1, g2, dxz[..., :d]), warmup=25, rep=100,
                          return_mode="median")
            out.append({"tile": tile, "ms": ms, "same_as_first": same})
            print(out[-1], flush=True)
        ms = do_bench(lambda: mit.conv_tm_forward(xz[..., :d], w, bias), warmup=25, rep=100, return_mode="median")
        out.append({"fwd_tile": saved["fwd"], "ms": ms})
        print(out[-1])
    finally:
        mit.CONV_TUNE.update(saved)
    return out


# ------------------------------------------------------------------------------------------- driver
def _child(side: str, name: str, a) -> dict:
    cmd = [sys.executable, __file__, "child", side, name, "--device", a.device, "--peer", a.peer or ""]
    if a.quick:
        cmd.append("--quick")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
    except subprocess.TimeoutExpired:
        return {"side": side, "row": name, "error": f"timed out after {a.timeout} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(TAG)]
    if not lines:
        return {"side": side, "row": name, "error": f"child failed rc={p.returncode}: {p.stderr[-600:]}"}
    return json.loads(lines[-1][len(TAG):])


def _fmt(v, unit=""):
    if v is None:
        return "-"
    if unit == "tok":
        return f"{v / 1e3:.1f}K"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def table(rows: list[dict]) -> str:
    """ours vs peer per row: train rows in tokens/s, forward rows in ms; ratio = ours speed / peer speed."""
    by = {(r["side"], r["row"]): r for r in rows}
    names = [n for n in {**ROWS, **QUICK} if any((s, n) in by for s in ("ours", "peer"))]
    lines = [f"{'row':<22}{'ours':>12}{'peer':>12}{'ratio':>8}{'peak GiB ours/peer':>22}"]
    for n in names:
        o, p = by.get(("ours", n), {}), by.get(("peer", n), {})
        tr = o.get("mode", p.get("mode")) == "train"
        key, unit = ("tokens_per_s", "tok") if tr else ("step_ms", "ms")

        def cell(r):
            return r.get("error", "absent")[:11] if r.get(key) is None else _fmt(r[key], unit) + ("" if tr else " ms")

        ratio = "-"
        if o.get(key) and p.get(key):
            ratio = f"{(o[key] / p[key]) if tr else (p[key] / o[key]):.2f}"
        mem = f"{_fmt(o.get('peak_gib'))} / {_fmt(p.get('peak_gib'))}"
        lines.append(f"{n:<22}{cell(o):>12}{cell(p):>12}{ratio:>8}{mem:>22}")
    return "\n".join(lines)


def save(obj: dict, name: str) -> None:
    text = json.dumps(obj, indent=1, default=float) + "\n"
    for d in [RESULTS] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else []):
        try:
            d.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(text)
        except OSError as e:
            print(f"could not write {d / name}: {e}", file=sys.stderr)


def _env(a) -> dict:
    import torch

    info = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu"}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        pass
    rev = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    info["mambaseq_rev"] = os.environ.get("MAMBASEQ_REV") or rev.stdout.strip() or "unknown"
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["run", "table", "profile", "child", "conv"])
    ap.add_argument("args", nargs="*")
    ap.add_argument("--sides", default="ours,peer")
    ap.add_argument("--side", default="ours")
    ap.add_argument("--peer", default=os.environ.get("MAMBASEQ_PEER", "/tmp/peer"))
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--name", default=None)
    a = ap.parse_args()
    rows = QUICK if a.quick else ROWS
    if a.cmd == "child":
        print(TAG + json.dumps(run_row(a.args[0], a.args[1], rows, a.device, a.peer or None)), flush=True)
        return
    if a.cmd == "conv":
        save({**_env(a), "conv_bwd_sweep": conv_sweep(a.device)}, a.name or "e2e_conv_sweep.json")
        return
    if a.cmd == "profile":
        for n in a.only or ["lm_train_b8_L2048"]:
            dest = Path(os.environ.get("OUT", RESULTS)) / f"profile_{a.side}_{n}.txt"
            profile_row(a.side, n, rows, a.device, a.peer, dest)
        return
    if a.cmd == "table":
        merged = {"runs": [], "rows": []}
        for f in a.args:
            d = json.loads(Path(f).read_text())
            merged["runs"].append({k: v for k, v in d.items() if k != "rows"})
            merged["rows"] += d["rows"]
        print(table(merged["rows"]))
        if a.name:
            save(merged, a.name)
        return
    sides = [s for s in a.sides.split(",") if s]
    result = {**_env(a), "peer_path": a.peer, "rows": []}
    if "peer" in sides and not os.path.isdir(os.path.join(a.peer or "", "mamba_ssm")):
        print(f"peer absent: nothing at {a.peer!r} (build it with bench/build_peer.sh); timing ours only")
        result["peer"] = "absent"
        sides.remove("peer")
    name = a.name or f"e2e_{result['device'].replace(' ', '_')}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    for n in a.only or list(rows):
        for s in sides:
            r = _child(s, n, a)
            result["rows"].append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "step_ms_all"}), flush=True)
            save(result, name)  # after every row: a run cut short by its time limit keeps what it measured
    print(table(result["rows"]))


if __name__ == "__main__":
    main()
