"""Spoken-digit waveform generation: prepare -> train -> generate -> evaluate (Hydra configs in mambaseq.configs).

    mambaseq audio run                             # CPU one-command job: synthetic digits, small SaShiMi, metrics
    mambaseq audio run experiment=sc09_gpu         # the longer GPU recipe
    mambaseq audio train audio_model=mamba train.max_steps=50
    mambaseq audio run data.sc09_dir=/data/speech_commands   # real SC09 (Speech Commands digits)
    python -m mambaseq.pipelines.audio ...         # the same without the console script

Next-sample prediction on 8-bit (mu-law by default) tokens: NLL is reported in bits per sample. Sampling
uses the O(1)-memory recurrent step (mambaseq.generation). Metrics follow the SC09 protocol with our own
digit classifier (mambaseq.audio.metrics). Every output of the default data says it is SYNTHETIC.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mambaseq import runs
from mambaseq.audio import (CLIP_LEN, SAMPLE_RATE, SPLITS, Digits, decode, fix_length, load_audio, save_wav,
                            silence_token, spread, with_start)
from mambaseq.audio.features import save_mel_grid
from mambaseq.audio.metrics import DigitClassifier, accuracy, sample_metrics, train_classifier
from mambaseq.data_prep import sc09
from mambaseq.fileio import write_json
from mambaseq.generation import sample
from mambaseq.training import lm_loss, resolve_device
from mambaseq.training import train as train_loop
from mambaseq.training.evaluation import eval_loop, next_token_bits

Config = runs.Config
LN2 = math.log(2)


# --- configuration and data -------------------------------------------------------------------------
SETTINGS = {
    "threads": "int>=0", "classifier.epochs": "int>=1", "classifier.batch_size": "int>=1",
    "classifier.lr": "float>0", "eval.val_clips": "int>=1", "eval.nll_clips": "int>=1", "eval.batch_size": "int>=1",
    "generate.n_samples": "int>=1", "generate.batch_size": "int>=1", "generate.seconds": "float>0",
    "generate.temperature": "float>0", "generate.top_k": "int>=0", "generate.top_p": "prob",
    "generate.prefix_seconds": "float>=0", "generate.mel_examples": "int>=0",
}


def load_config(overrides: Sequence[str] = (), config_name: str = "audio") -> Config:
    """``configs/<config_name>.yaml`` with Hydra overrides, every setting checked by name (ConfigError)
    before anything runs; ``threads`` > 0 sets torch's CPU threads."""
    cfg = runs.load_config(config_name, overrides, SETTINGS)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    return cfg


def prepare(cfg: Config) -> Path:
    """Build (or reuse) the digit set: real Speech Commands if data.sc09_dir is set, else synthetic espeak-ng."""
    d = cfg["data"]
    params = sc09.SynthParams(accents_per_voice=d["accents_per_voice"], takes=d["takes"],
                              max_voices=d["max_voices"], seed=cfg["seed"])
    return sc09.prepare(d["dir"], d.get("sc09_dir"), params)


# --- model -------------------------------------------------------------------------------------------
def build_model(cfg: Config) -> torch.nn.Module:
    """The LM of ``cfg["audio_model"]``: a SaShiMi or a flat Mamba backbone over 256 sample values."""
    return runs.build_model(cfg["audio_model"], "lm", vocab_size=256)


def run_dir(cfg: Config, data: Digits) -> Path:
    return runs.run_dir(cfg, "synthetic" if data.synthetic else "sc09", cfg["audio_model"]["backbone"])


def nll_bits(model: torch.nn.Module, tokens: torch.Tensor, start: int, batch_size: int,
             device: torch.device) -> float:
    """Mean NLL in bits per sample of full clips (n, T) (every sample predicted, from the start token)."""
    clips = (with_start(tokens[i : i + batch_size], start) for i in range(0, len(tokens), batch_size))
    s = eval_loop(model, clips, next_token_bits, device, precision="fp32")
    return float(s["bits_sum"].sum() / s["count"].sum())


# --- steps -------------------------------------------------------------------------------------------
def train(cfg: Config, data: Digits, resume: bool = False) -> Path:
    """Train the LM on random crops of [start token] + clip; returns the run directory."""
    tc = runs.train_config(cfg, int(cfg["data"]["seq_len"]))
    out, start = run_dir(cfg, data), silence_token(data.quantization)
    train_tokens, n, T = data.tokens["train"], len(data.tokens["train"]), data.tokens["train"].shape[1]
    val = data.tokens["val"][spread(len(data.tokens["val"]), cfg["eval"]["val_clips"])]

    def batch_fn(step: int, seq_len: int, batch_size: int) -> torch.Tensor:
        # a pure function of the step, so resuming replays the same batches
        rng = np.random.default_rng([cfg["seed"], step])
        idx = torch.from_numpy(rng.integers(0, n, batch_size))
        seqs = with_start(train_tokens[idx], start)  # (b, T + 1)
        L = min(seq_len, T)
        offs = rng.integers(0, T - L + 1, batch_size)
        return torch.stack([seqs[i, o : o + L + 1] for i, o in enumerate(offs)])  # (b, L + 1)

    def eval_fn(model: torch.nn.Module, step: int) -> dict[str, float]:
        bits = nll_bits(model, val, start, cfg["eval"]["batch_size"], next(model.parameters()).device)
        print(f"[audio] step {step}: val NLL {bits:.3f} bits/sample ({time.perf_counter() - t_start:.0f} s)",
              flush=True)  # a line per eval even with the progress bar off (GPU logs)
        return {"loss": bits * LN2, "bits_per_sample": bits}

    model = build_model(cfg)
    n_params, t_start = runs.n_params(model), time.perf_counter()
    print(f"[audio] {data.label}: training {type(model).__name__} ({n_params / 1e6:.2f}M params) on "
          f"{n} clips, {tc.batch_size} x {min(tc.seq_len, T)} samples per step -> {out}")
    res = train_loop(model, lm_loss, batch_fn, tc, out, eval_fn=eval_fn, resume=resume,
                     extra_state={"synthetic_data": data.synthetic, "data_dir": str(data.dir)})
    summary = {"data": data.label, "synthetic_data": data.synthetic, "params": n_params, "steps": res.step,
               "train_bits_per_sample": res.metrics.get("train/bits_per_token"),
               "val_bits_per_sample": res.metrics.get("val/bits_per_sample"),
               "tokens_per_s": res.tokens_per_s, "wall_s": res.wall_s, "stopped_early": res.stopped_early,
               "peak_memory_gib": res.peak_memory_gib, "peak_rss_gib": res.peak_rss_gib,
               "config": cfg}  # the run describes itself
    write_json(summary, out / "train_summary.json", indent=1)

    def fmt(v: float | None) -> str:  # None: stopped (max_time_s) before the first train log
        return "n/a" if v is None else f"{v:.3f}"

    print(f"[audio] trained {res.step} steps in {res.wall_s:.0f} s ({res.tokens_per_s:.0f} samples/s); "
          f"train NLL {fmt(summary['train_bits_per_sample'])} bits/sample, "
          f"val NLL {fmt(summary['val_bits_per_sample'])} bits/sample")
    return out


def trained_model(cfg: Config, data: Digits) -> tuple[torch.nn.Module, Path]:
    out = run_dir(cfg, data)
    ckpt = runs.require_checkpoint(out, "audio")
    return runs.load_model(ckpt).to(resolve_device(cfg["train"]["device"])), out


@contextlib.contextmanager
def _sampling_threads(device: torch.device):
    """One CPU thread while stepping: each step is a few hundred tiny ops, where thread hand-offs cost more
    than they save (measured here: 5.9 ms vs 40 ms per step with 2 threads on a busy 2-core machine)."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def generate(cfg: Config, data: Digits) -> Path:
    """Sample clips with the recurrent step; writes WAVs, samples.json and a generated-vs-real mel PNG."""
    g = cfg["generate"]
    model, out = trained_model(cfg, data)
    start, n_new = silence_token(data.quantization), int(round(g["seconds"] * SAMPLE_RATE))
    n_prefix = int(round(g["prefix_seconds"] * SAMPLE_RATE))
    if not 0 <= n_prefix < n_new:
        raise ValueError(f"generate.prefix_seconds must be in [0, generate.seconds), got {g['prefix_seconds']}")
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(cfg["seed"])
    sdir = out / "samples"
    sdir.mkdir(parents=True, exist_ok=True)
    for old in sdir.glob("gen_*.wav"):  # a new set replaces the old one entirely
        old.unlink()
    records, t0 = [], time.perf_counter()
    with _sampling_threads(next(model.parameters()).device):
        for i in range(0, g["n_samples"], g["batch_size"]):
            b = min(g["batch_size"], g["n_samples"] - i)
            kw = dict(temperature=g["temperature"], top_k=g["top_k"], top_p=g["top_p"], generator=gen)
            if n_prefix:  # condition on the opening of real test clips: [start] + prefix, consumed in parallel
                n_test = len(data.tokens["test"])
                rows = (torch.arange(i, i + b) * n_test // g["n_samples"]) % n_test  # spread over the voices
                prefix = with_start(data.tokens["test"][rows, :n_prefix], start)
                res = sample(model, n_new - n_prefix, prefix=prefix, return_prefix=True, **kw)
                toks = res.tokens[:, 1:]
            else:
                res = sample(model, n_new, batch_size=b, start_token=start, **kw)
                toks = res.tokens
            for j in range(b):
                k = i + j
                save_wav(sdir / f"gen_{k:03d}.wav", decode(toks[j].cpu().numpy(), data.quantization))
                records.append({"file": f"gen_{k:03d}.wav", "loglik_nats": float(res.loglik[j]),
                                "bits_per_sample": float(res.bits_per_token[j]), "generated_samples": res.n_new})
    wall = time.perf_counter() - t0
    meta = {"data": data.label, "synthetic_data": data.synthetic, "settings": g, "quantization": data.quantization,
            "wall_s": wall, "samples_per_s": g["n_samples"] * (n_new - n_prefix) / wall, "samples": records}
    write_json(meta, sdir / "samples.json", indent=1)
    gen_wave = np.stack([load_audio(sdir / r["file"]) for r in records[: g["mel_examples"]]])
    real = data.wave["test"][spread(len(data.wave["test"]), g["mel_examples"])].numpy()
    save_mel_grid(sdir / "mel_generated_vs_real.png", {"generated": gen_wave, f"real ({data.label})": real})
    print(f"[audio] wrote {len(records)} samples to {sdir} in {wall:.0f} s "
          f"({meta['samples_per_s']:.0f} samples/s incl. the batch); mean model NLL of the samples "
          f"{np.mean([r['bits_per_sample'] for r in records]):.3f} bits/sample")
    return sdir


def get_classifier(cfg: Config, data: Digits) -> tuple[DigitClassifier, float]:
    """Train (or load the cached) digit classifier for this data set; returns it and its test accuracy."""
    cdir = Path(cfg["out_dir"]) / f"classifier_{data.manifest['params_hash']}"
    if (cdir / "classifier.json").is_file():
        clf = DigitClassifier.load(cdir)
        return clf, json.loads((cdir / "classifier.json").read_text())["test_accuracy"]
    c = cfg["classifier"]
    clf = train_classifier(data.wave["train"], data.labels["train"], data.wave["val"], data.labels["val"],
                           epochs=c["epochs"], batch_size=c["batch_size"], lr=c["lr"], seed=cfg["seed"])
    acc = accuracy(clf, data.wave["test"], data.labels["test"])
    clf.save(cdir, test_accuracy=acc, val_accuracy=accuracy(clf, data.wave["val"], data.labels["val"]),
             data=data.label, synthetic_data=data.synthetic)
    return clf, acc


def evaluate(cfg: Config, data: Digits) -> dict[str, Any]:
    """Test NLL (bits/sample), classifier accuracy, IS/mIS/AM/FID of the samples and of held-out real clips."""
    model, out = trained_model(cfg, data)
    device = next(model.parameters()).device
    clf, acc = get_classifier(cfg, data)
    sdir = out / "samples"
    files = sorted(sdir.glob("gen_*.wav"))
    if not files:
        raise FileNotFoundError(f"{sdir}: no generated samples; run `mambaseq audio generate` first")
    gen = torch.from_numpy(np.stack([fix_length(load_audio(f), CLIP_LEN) for f in files]))
    test, val, prior = data.wave["test"], data.wave["val"], data.train_prior()
    pick = torch.from_numpy(np.random.default_rng(cfg["seed"]).permutation(len(val))[: len(gen)])
    test_nll = nll_bits(model, data.tokens["test"][spread(len(test), cfg["eval"]["nll_clips"])],
                        silence_token(data.quantization),
                        cfg["eval"]["batch_size"], device)
    res = {
        "data": data.label, "synthetic_data": data.synthetic, "quantization": data.quantization,
        "test_nll_bits_per_sample": test_nll, "test_nll_clips": min(cfg["eval"]["nll_clips"], len(test)),
        "classifier_test_accuracy": acc,
        "generated": sample_metrics(clf, gen, test, prior),
        "real_val_same_n": sample_metrics(clf, val[pick], test, prior),
        "real_val_all": sample_metrics(clf, val, test, prior),
        "reference": f"FID against the {len(test)} real test clips",
    }
    write_json(res, out / "metrics.json", indent=1)
    print(f"\n[audio] {data.label} -> {out / 'metrics.json'}")
    print(f"  test NLL {test_nll:.3f} bits/sample ({res['test_nll_clips']} clips); "
          f"digit classifier test accuracy {acc:.3f} (chance 0.100)")
    print(f"  {'':28s} {'n':>5s} {'IS':>7s} {'mIS':>9s} {'AM':>7s} {'FID':>9s}")
    for name in ("generated", "real_val_same_n", "real_val_all"):
        r = res[name]
        print(f"  {name:28s} {r['n']:5d} {r['IS']:7.3f} {r['mIS']:9.3f} {r['AM']:7.3f} {r['FID']:9.3f}")
    print("  (IS, mIS higher is better, at most 10 for IS; AM, FID lower is better)")
    return res


def run_all(cfg: Config, resume: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = Digits(prepare(cfg), cfg["data"]["quantization"])
    print(f"[audio] data: {data.label} at {data.dir} "
          + ", ".join(f"{s} {len(data.labels[s])}" for s in SPLITS))
    get_classifier(cfg, data)
    train(cfg, data, resume=resume)
    generate(cfg, data)
    res = evaluate(cfg, data)
    print(f"[audio] total {time.perf_counter() - t0:.0f} s")
    return res


# --- CLI -----------------------------------------------------------------------------------------------
def _prepare(cfg: Config, args) -> None:
    print(f"[audio] prepared {prepare(cfg)}")


def _digits(cfg: Config) -> Digits:
    return Digits(prepare(cfg), cfg["data"]["quantization"])


COMMAND = runs.Command("audio", "spoken-digit waveform generation", __doc__, load_config, {
    "prepare": _prepare,
    "train": lambda cfg, args: train(cfg, _digits(cfg), resume=args.resume),
    "generate": lambda cfg, args: generate(cfg, _digits(cfg)),
    "evaluate": lambda cfg, args: evaluate(cfg, _digits(cfg)),
    "run": lambda cfg, args: run_all(cfg, resume=args.resume),
}, example="audio_model=mamba train.max_steps=50")
main = COMMAND.main

if __name__ == "__main__":
    raise SystemExit(main())
