"""Generation benchmark: mambaseq ``generate(cg=True)`` vs the peer (mamba-ssm 2.3.2.post1
``MambaLMHeadModel.generate(..., cg=True)``) in the same run, plus the SC09 SaShiMi audio real-time factor
before (the old eager sampling loop) and after (``generate(cg=True)``). Prints a table, writes JSON under
bench/results/.

    python bench/bench_generate.py [--peer /tmp/peer] [--quick] [--no-audio] [--out PATH]

LM: the 90.5M model of issue 13 (d_model 768 x 24 layers, vocab 16), the same random weights in both (state-dict
names agree), bf16 weights, prompt 128 + 1,024 new tokens, greedy, batch 1 and 64; tok/s = batch x new tokens /
wall time of one whole call (prefill included), median of --repeats calls after one warm-up call (which captures
the graphs). Two more columns of ours, same run: "L2 prefetch" with the decode graph's L2-prefetch branch (sm_90+
GPUs only; kernels/l2_prefetch.py, off by default: MAMBASEQ_L2_PREFETCH=1) and "bf16 state" with the recurrent
state in bf16 (``ssm_state_dtype``, as the peer's cache of a bf16 model; ours defaults to fp32). "before" is the
pre-issue-13 path (eager Python loop, unfused per-layer step, torch.multinomial), timed once over fewer tokens
(noisy on a shared CPU). Audio: SaShiMi of configs/experiment/sc09_gpu.yaml (d_model 64, 4 blocks per scale, pool
4 x 4, complex, fp32 as trained), unconditional sampling at temperature 1 from the silence token; real-time factor
= seconds of 16 kHz audio per wall-clock second, per stream and for the whole batch. The peer is found at --peer
(built there by bench/build_peer.sh); without it only ours is timed and the table says so. --quick: tiny models
and lengths, runs on CPU (eager, no graphs) as a smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mambaseq.config import MambaConfig  # noqa: E402
from mambaseq.fileio import write_json  # noqa: E402
from mambaseq.generation import filter_logits, generate  # noqa: E402
from mambaseq.kernels import causal_conv1d_update, selective_state_update  # noqa: E402
from mambaseq.kernels.l2_prefetch import l2_prefetch_supported  # noqa: E402
from mambaseq.model import MambaBackbone, MambaLMHeadModel  # noqa: E402
from mambaseq.modules.mamba import Mamba  # noqa: E402
from mambaseq.sashimi import SaShiMiConfig, SaShiMiLM  # noqa: E402

SAMPLE_RATE = 16_000
FULL = dict(lm=dict(d_model=768, n_layer=24, vocab_size=16), prompt=128, new=1024, batches=(1, 64), before_new=64,
            audio=dict(d_model=64, n_layer=4, d_state=16, pool=(4, 4), expand_pool=2, complex=True),
            audio_batches=(1, 16), audio_steps=8000, audio_before_steps=800)
QUICK = dict(lm=dict(d_model=64, n_layer=2, vocab_size=16), prompt=16, new=32, batches=(1, 4), before_new=16,
             audio=dict(d_model=16, n_layer=1, d_state=4, pool=(4, 4), expand_pool=2, complex=True),
             audio_batches=(1, 2), audio_steps=64, audio_before_steps=32)


# ------------------------------------------------------------------------------------------------ peer
def _stub_transformers() -> None:
    """mamba-ssm's generation utilities import three names from transformers; when transformers is not
    installed, provide minimal stand-ins (the peer's decoding loop itself is untouched)."""
    try:
        import transformers.generation  # noqa: F401
        return
    except ImportError:
        pass
    from dataclasses import dataclass

    @dataclass
    class _Out:
        sequences: torch.Tensor
        scores: tuple | None = None

    gen = types.ModuleType("transformers.generation")
    gen.GreedySearchDecoderOnlyOutput = gen.SampleDecoderOnlyOutput = _Out
    gen.TextStreamer = type("TextStreamer", (), {})
    utils = types.ModuleType("transformers.utils")
    utils.WEIGHTS_NAME, utils.CONFIG_NAME = "pytorch_model.bin", "config.json"
    hub = types.ModuleType("transformers.utils.hub")
    hub.cached_file = lambda *a, **k: None
    top = types.ModuleType("transformers")
    top.generation, top.utils, utils.hub = gen, utils, hub
    sys.modules.update({"transformers": top, "transformers.generation": gen, "transformers.utils": utils,
                        "transformers.utils.hub": hub})


def load_peer(path: str | None):
    """(MambaLMHeadModel, MambaConfig) classes of the peer built at ``path``, or None (with the reason)."""
    if not path or not os.path.isdir(os.path.join(path, "mamba_ssm")):
        return None, f"not found at {path!r} (build it with bench/build_peer.sh)"
    sys.path[:0] = [path] + glob.glob(os.path.join(path, "einops-*.whl"))
    pkg = types.ModuleType("mamba_ssm")  # skip the package __init__
    pkg.__path__ = [os.path.join(path, "mamba_ssm")]
    sys.modules["mamba_ssm"] = pkg
    _stub_transformers()
    try:
        from mamba_ssm.models.config_mamba import MambaConfig as PeerConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel as PeerLM
    except Exception as e:  # report, time ours
        return None, f"import failed: {type(e).__name__}: {e}"
    return (PeerLM, PeerConfig), "mamba-ssm 2.3.2.post1 from " + path


def peer_model(classes, ours: MambaLMHeadModel) -> torch.nn.Module:
    PeerLM, PeerConfig = classes
    c = ours.cfg
    cfg = PeerConfig(d_model=c.d_model, n_layer=c.n_layer, vocab_size=c.vocab_size, ssm_cfg={"layer": "Mamba1"},
                     rms_norm=True, residual_in_fp32=True, fused_add_norm=True,
                     pad_vocab_size_multiple=c.pad_vocab_size_multiple, tie_embeddings=c.tie_embeddings)
    p = PeerLM(cfg, device="cuda", dtype=torch.bfloat16)
    missing, unexpected = p.load_state_dict(ours.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weight conversion: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return p.eval()


# ------------------------------------------------------------------------------- the pre-issue-13 path
def _legacy_mamba_step(self: Mamba, h: torch.Tensor, cache) -> torch.Tensor:
    """Mamba.step as it was before issue 13: unfused ops, parameter conversions every token."""
    x, z = self.in_proj(h).chunk(2, dim=-1)
    w = self.conv1d.weight.squeeze(1)
    x = causal_conv1d_update(x.contiguous(), cache.conv_state, w, self.conv1d.bias, activation="silu",
                             backend=self.backend)
    dt, B, C = self._ssm_inputs(self.x_proj(x))
    y = selective_state_update(cache.ssm_state, x, dt, self.A(), B, C, self.D.float(), z.contiguous(),
                               dt_bias=self.dt_proj.bias.float(), dt_softplus=True, backend=self.backend)
    return self.out_proj(y)


def _legacy_backbone_step(self: MambaBackbone, input_ids: torch.Tensor, cache) -> torch.Tensor:
    h = self.embedding(input_ids.long())
    for layer, c in zip(self.layers, cache):
        h = layer.step(h, c)
    return self.norm_f(h)


@contextlib.contextmanager
def legacy_step():
    saved = Mamba.step, MambaBackbone.step
    Mamba.step, MambaBackbone.step = _legacy_mamba_step, _legacy_backbone_step
    try:
        yield
    finally:
        Mamba.step, MambaBackbone.step = saved


@torch.no_grad()
def legacy_sample(model, prompt: torch.Tensor, n_new: int, top_k: int, gen: torch.Generator | None) -> torch.Tensor:
    """The pre-issue-13 ``generation.sample`` loop: prefill, then per token step + filter + multinomial."""
    with legacy_step():
        cache = model.allocate_inference_cache(prompt.shape[0])
        logits = model(prompt, cache=cache)[:, -1]
        out = torch.empty(prompt.shape[0], n_new, dtype=torch.long, device=prompt.device)
        loglik = torch.zeros(prompt.shape[0], device=prompt.device)
        for t in range(n_new):
            filtered = filter_logits(logits, 1.0, top_k, 1.0)
            tok = torch.multinomial(filtered.log_softmax(-1).exp(), 1, generator=gen).squeeze(-1)
            loglik += logits.float().log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
            out[:, t] = tok
            if t + 1 < n_new:
                logits = model.step(tok, cache)
    return out


# ----------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after one warm-up call; and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


@contextlib.contextmanager
def _env(key: str, value: str):
    """Set one environment variable for the block, then restore it."""
    saved = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def bench_lm(sz: dict, device: torch.device, peer, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ours = MambaLMHeadModel(MambaConfig(**sz["lm"])).to(device=device, dtype=dtype).eval()
    n_params = sum(p.numel() for p in ours.parameters())
    other = peer_model(peer, ours) if peer else None
    cg = device.type == "cuda"
    rows = []
    for b in sz["batches"]:
        prompt = torch.randint(0, sz["lm"]["vocab_size"], (b, sz["prompt"]),
                               generator=torch.Generator().manual_seed(b)).to(device)
        n = sz["new"]
        row = {"model": f"LM {n_params / 1e6:.1f}M", "batch": b, "prompt": sz["prompt"], "new_tokens": n,
               "dtype": str(dtype).removeprefix("torch."), "mode": "cg" if cg else "eager (CPU)"}
        t, seqs = timed(lambda: generate(ours, prompt, max_new_tokens=n, top_k=1, cg=cg), device, repeats)
        row["ours_tok_s"] = b * n / t
        if cg and l2_prefetch_supported(device):  # the same decoder with its L2-prefetch branch (off by default)
            ours.__dict__.pop("_generation_graphs", None)
            with _env("MAMBASEQ_L2_PREFETCH", "1"):
                t1, _ = timed(lambda: generate(ours, prompt, max_new_tokens=n, top_k=1, cg=cg), device, repeats)
            ours.__dict__.pop("_generation_graphs", None)
            row["ours_l2_prefetch_tok_s"] = b * n / t1
        # the recurrent state in bf16, as the peer's cache of a bf16 model (fp32 is our default)
        tb16, s16 = timed(lambda: generate(ours, prompt, max_new_tokens=n, top_k=1, cg=cg,
                                           ssm_state_dtype=torch.bfloat16), device, repeats)
        ours.__dict__.pop("_generation_graphs", None)
        row["ours_bf16_state_tok_s"] = b * n / tb16
        row["bf16_state_agree_fp32_state"] = float((s16[:, sz["prompt"]:] == seqs[:, sz["prompt"]:]).float().mean())
        nb = sz["before_new"]
        tb, _ = timed(lambda: legacy_sample(ours, prompt, nb, 1, None), device, 1)
        row["before_tok_s"] = b * nb / tb
        if cg:
            eager = generate(ours, prompt, max_new_tokens=min(n, 64), top_k=1)
            row["ours_cg_vs_eager_agree_first64"] = float((eager == seqs[:, : eager.shape[1]]).float().mean())
        if other is not None:
            tp, ps = timed(lambda: other.generate(prompt, max_length=sz["prompt"] + n, top_k=1, cg=True), device,
                           repeats)
            ps = ps if isinstance(ps, torch.Tensor) else ps.sequences
            row["peer_tok_s"] = b * n / tp
            row["speedup_vs_peer"] = row["ours_tok_s"] / row["peer_tok_s"]
            row["token_agreement_with_peer"] = float((ps[:, sz["prompt"]:] == seqs[:, sz["prompt"]:]).float().mean())
        rows.append(row)
        print(row, flush=True)
    return rows


def bench_audio(sz: dict, device: torch.device, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model = SaShiMiLM(SaShiMiConfig(vocab_size=256, **sz["audio"])).to(device).eval()
    cg = device.type == "cuda"
    rows = []
    for b in sz["audio_batches"]:
        start = torch.full((b, 1), 128, dtype=torch.long, device=device)  # the mu-law silence token
        n, nb = sz["audio_steps"], sz["audio_before_steps"]
        gen = torch.Generator(device=device).manual_seed(0)
        t, _ = timed(lambda: generate(model, start, max_new_tokens=n, top_k=0, cg=cg, generator=gen), device,
                     repeats)
        tb, _ = timed(lambda: legacy_sample(model, start, nb, 0, gen), device, 1)
        after, before = n / SAMPLE_RATE / t, nb / SAMPLE_RATE / tb
        row = {"model": "SaShiMi SC09", "batch": b, "steps_after": n, "steps_before": nb,
               "mode": "cg" if cg else "eager (CPU)", "rtf_after_per_stream": after, "rtf_before_per_stream": before,
               "rtf_after_batch": after * b, "rtf_before_batch": before * b, "speedup": after / before}
        rows.append(row)
        print(row, flush=True)
    return rows


def table(lm: list[dict], audio: list[dict], peer_note: str) -> str:
    f = (lambda v: "-" if v is None else f"{v:,.0f}")
    g = (lambda v: "-" if v is None else f"{v:.2f}")
    lines = [f"peer: {peer_note}", "",
             f"{'LM':<12}{'batch':>6}{'ours tok/s':>13}{'L2 prefetch':>12}{'bf16 state':>12}{'peer tok/s':>13}"
             f"{'ours/peer':>10}{'before tok/s':>14}{'agree peer':>11}"]
    for r in lm:
        lines.append(f"{r['model']:<12}{r['batch']:>6}{f(r['ours_tok_s']):>13}"
                     f"{f(r.get('ours_l2_prefetch_tok_s')):>12}{f(r.get('ours_bf16_state_tok_s')):>12}"
                     f"{f(r.get('peer_tok_s')):>13}{g(r.get('speedup_vs_peer')):>10}{f(r['before_tok_s']):>14}"
                     f"{g(r.get('token_agreement_with_peer')):>11}")
    if audio:
        lines += ["", f"{'audio':<14}{'batch':>6}{'RTF after':>11}{'RTF before':>12}{'x batch after':>15}"
                      f"{'x batch before':>16}{'speedup':>9}"]
    for r in audio:
        lines.append(f"{r['model']:<14}{r['batch']:>6}{r['rtf_after_per_stream']:>11.3f}"
                     f"{r['rtf_before_per_stream']:>12.4f}{r['rtf_after_batch']:>15.3f}{r['rtf_before_batch']:>16.4f}"
                     f"{r['speedup']:>9.1f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer", default=os.environ.get("MAMBASEQ_PEER", "/tmp/peer"),
                    help="folder holding the built peer (mamba_ssm/, selective_scan_cuda*.so)")
    ap.add_argument("--quick", action="store_true", help="tiny models and lengths (runs on CPU)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-audio", action="store_true", help="time the LM only (skip the SaShiMi real-time factor)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/generate_<device>_<time>.json)")
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not a.quick:
        print("bench_generate: the full benchmark needs a CUDA GPU; use --quick on CPU", file=sys.stderr)
        sys.exit(2)
    sz = QUICK if a.quick else FULL
    peer, note = (load_peer(a.peer) if device.type == "cuda" else (None, "not timed on CPU"))
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; peer: {note}", flush=True)
    lm = bench_lm(sz, device, peer, a.repeats)
    audio = [] if a.no_audio else bench_audio(sz, device, a.repeats)
    print(table(lm, audio, note))
    dev = torch.cuda.get_device_name().replace(" ", "_") if device.type == "cuda" else "cpu"
    out = Path(a.out or ROOT / "bench" / "results" / f"generate_{dev}{'_quick' if a.quick else ''}_"
                                                      f"{time.strftime('%Y%m%d-%H%M%S')}.json")
    write_json({"device": dev, "quick": a.quick, "peer": note, "torch": torch.__version__, "lm": lm, "audio": audio,
                "sizes": {k: v for k, v in sz.items()}}, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
