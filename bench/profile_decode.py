"""Where the time of one decode step goes: GPU kernels of ``generate(cg=True)`` for the issue-13 LM (d_model 768
x 24 layers, vocab 16, bf16), ours and the peer's (mamba-ssm 2.3.2.post1) in the same run.

    python bench/profile_decode.py [--peer /tmp/peer] [--batches 1 64] [--tokens 256] [--eager] [--out DIR]

For each batch size: one warm-up ``generate`` (captures the graphs), then ``--tokens`` new tokens under
``torch.profiler``; prints, per side, every kernel's GPU microseconds per generated token (kernels that run in
the prefill only - the parallel scan and conv - are listed but excluded from the per-token sum), the kernel
count per token, and the wall microseconds per token. Writes the tables as text under --out. Insight, not a
claim: the same-run speed numbers come from ``bench/bench_generate.py``.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_generate import FULL, load_peer, peer_model  # noqa: E402

from mambaseq.config import MambaConfig  # noqa: E402
from mambaseq.generation import generate  # noqa: E402
from mambaseq.model import MambaLMHeadModel  # noqa: E402

PREFILL_ONLY = ("selective_scan", "scan_fwd", "chunk", "causal_conv1d_fwd", "conv1d_fwd", "_conv_fwd")


def kernel_table(prof, n_tokens: int, wall_s: float, title: str) -> str:
    per = collections.Counter()
    calls = collections.Counter()
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA and e.device_time > 0:
            per[e.name] += e.device_time
            calls[e.name] += 1
    rows = sorted(per.items(), key=lambda kv: -kv[1])
    total = sum(v for k, v in rows if not any(p in k.lower() for p in PREFILL_ONLY))
    n_calls = sum(calls[k] for k, _ in rows if not any(p in k.lower() for p in PREFILL_ONLY))
    lines = [f"== {title}: {n_tokens} tokens; wall {wall_s / n_tokens * 1e6:.1f} us/token; GPU kernels "
             f"{total / n_tokens:.1f} us/token, {n_calls / n_tokens:.1f} kernels/token"]
    for k, v in rows[:25]:
        lines.append(f"{v / n_tokens:9.2f} us/tok {calls[k] / n_tokens:7.2f} calls/tok  {k[:110]}")
    return "\n".join(lines)


def run(model, prompt, n: int, peer: bool, title: str, cg: bool = True) -> str:
    def call():
        if peer:
            return model.generate(prompt, max_length=prompt.shape[1] + n, top_k=1, cg=True)
        return generate(model, prompt, max_new_tokens=n, top_k=1, cg=cg)

    call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        call()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    return kernel_table(prof, n, wall, title)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer", default=os.environ.get("MAMBASEQ_PEER", "/tmp/peer"))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--eager", action="store_true", help="also profile our eager (no graph) decode")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("profile_decode: needs a CUDA GPU")
    torch.manual_seed(0)
    ours = MambaLMHeadModel(MambaConfig(**FULL["lm"])).cuda().to(torch.bfloat16).eval()
    classes, note = load_peer(a.peer)
    other = peer_model(classes, ours) if classes else None
    out = [f"peer: {note}"]
    for b in a.batches:
        prompt = torch.randint(0, FULL["lm"]["vocab_size"], (b, FULL["prompt"]), device="cuda")
        out.append(run(ours, prompt, a.tokens, False, f"ours b{b}"))
        if a.eager:
            out.append(run(ours, prompt, 32, False, f"ours eager b{b}", cg=False))
        if other is not None:
            out.append(run(other, prompt, a.tokens, True, f"peer b{b}"))
        print("\n".join(out[-3:]), flush=True)
    dest = Path(a.out) / f"profile_decode_{time.strftime('%Y%m%d-%H%M%S')}.txt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n\n".join(out) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
