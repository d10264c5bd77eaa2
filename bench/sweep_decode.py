"""Decode-speed sweep of ours only (issue 13): every combination of the decoder's speed settings for the
90.5M LM of ``bench_generate.py``, one GPU, one run. Prints a table, writes JSON under bench/results/.

    python bench/sweep_decode.py [--batches 1 64] [--repeats 3] [--quick] [--out PATH]

Settings swept: the recurrent state's dtype (``ssm_state_dtype``: fp32, our default,
or bf16 as the peer's cache of a bf16 model), and ``MAMBASEQ_L2_PREFETCH`` (the L2-prefetch branch,
kernels/l2_prefetch.py; sm_90+ only; ``--prefetch-programs`` sets its programs). tok/s = batch x new tokens /
wall time of one whole ``generate(cg=True)`` call (prefill included), median of --repeats after a warm-up call
that captures the graphs; "agree" is the fraction of new tokens equal to the default setting's at that batch.
The peer is not timed here: ``bench_generate.py`` makes the same-run comparison. (Design 7 of
bench/notes_generate.md, a batch split over parallel graph branches, was swept by this script at commit
8e6abe1 and removed.)
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_generate import FULL, QUICK, timed  # noqa: E402

from mambaseq.config import MambaConfig  # noqa: E402
from mambaseq.fileio import write_json  # noqa: E402
from mambaseq.generation import generate  # noqa: E402
from mambaseq.kernels.l2_prefetch import l2_prefetch_supported  # noqa: E402
from mambaseq.model import MambaLMHeadModel  # noqa: E402

ENV_KEYS = ("MAMBASEQ_L2_PREFETCH", "MAMBASEQ_L2_PREFETCH_PROGRAMS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--states", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--prefetch-programs", type=int, nargs="*", default=[32],
                    help="L2-prefetch variants to time (programs per request set); none: skip the prefetch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny model, runs on CPU (eager) as a smoke test")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not a.quick:
        sys.exit("sweep_decode: needs a CUDA GPU (or --quick on CPU)")
    sz = QUICK if a.quick else FULL
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = MambaLMHeadModel(MambaConfig(**sz["lm"])).to(device=device, dtype=dtype).eval()
    cg = device.type == "cuda"
    prefetch = [None] + (list(a.prefetch_programs) if cg and l2_prefetch_supported(device) else [])
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    rows = []
    try:
        for b in a.batches:
            prompt = torch.randint(0, sz["lm"]["vocab_size"], (b, sz["prompt"]),
                                   generator=torch.Generator().manual_seed(b)).to(device)
            n, ref = sz["new"], None
            for state, pf in itertools.product(a.states, prefetch):
                os.environ["MAMBASEQ_L2_PREFETCH"] = "0" if pf is None else "1"
                if pf is not None:
                    os.environ["MAMBASEQ_L2_PREFETCH_PROGRAMS"] = str(pf)
                model.__dict__.pop("_generation_graphs", None)
                sdt = torch.bfloat16 if state == "bf16" else None
                t, seqs = timed(lambda: generate(model, prompt, max_new_tokens=n, top_k=1, cg=cg,
                                                 ssm_state_dtype=sdt), device, a.repeats)
                new = seqs[:, sz["prompt"]:]
                ref = new if ref is None else ref
                row = {"batch": b, "ssm_state": state,
                       "l2_prefetch_programs": pf or 0, "tok_s": b * n / t,
                       "agree_with_first": float((new == ref).float().mean())}
                rows.append(row)
                print(f"batch {b}, {state} state, L2 prefetch {pf or 'off'}: {row['tok_s']:,.0f} tok/s", flush=True)
    finally:
        model.__dict__.pop("_generation_graphs", None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    dev = torch.cuda.get_device_name().replace(" ", "_") if cg else "cpu"
    print(f"\n{dev}, LM {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M {str(dtype)[6:]}, prompt "
          f"{sz['prompt']} + {sz['new']} greedy")
    print("| batch | SSM state | L2 prefetch | tok/s | agree |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['ssm_state']} | {r['l2_prefetch_programs'] or 'off'} | "
              f"{r['tok_s']:,.0f} | {r['agree_with_first']:.2f} |")
    out = Path(a.out or ROOT / "bench" / "results" / f"sweep_decode_{dev}{'_quick' if a.quick else ''}_"
                                                      f"{time.strftime('%Y%m%d-%H%M%S')}.json")
    write_json({"device": dev, "torch": torch.__version__, "rows": rows,
                "sizes": {"lm": sz["lm"], "prompt": sz["prompt"], "new": sz["new"], "batches": a.batches}}, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
