"""Spoken-digit waveform generation: prepare -> train -> generate -> evaluate (Hydra configs in mambaseq.configs).

    mambaseq audio run                             # CPU one-command job: synthetic digits, small SaShiMi, metrics
    mambaseq audio run experiment=sc09_gpu         # one GPU command (~6 min on an H100)
    mambaseq audio train experiment=sc09_h200 --resume   # x3: the H200 recipe, 360 steps a command
    mambaseq audio run experiment=sc09_h200 --resume     # then: samples, continuations, metrics, listen.html
    mambaseq audio train audio_model=mamba train.max_steps=50
    mambaseq audio run data.sc09_dir=/data/speech_commands   # real SC09 (Speech Commands digits)
    python -m mambaseq.pipelines.audio ...         # the same without the console script

Next-sample prediction on 8-bit (mu-law by default) tokens: NLL is reported in bits per sample. Sampling
uses the O(1)-memory recurrent step (mambaseq.generation): unconditional clips from the silence token, and
continuations of real test clips (the first generate.continuation_prefix_seconds given, fed through the model
in parallel, the rest generated). Metrics follow the SC09 protocol (IS, mIS, AM, FID) with our own digit
classifier (mambaseq.audio.metrics), plus the classifier's accuracy on the continuations against the true
digit (is the digit kept?). ``evaluate`` writes listen.html, players and mel spectrograms side by side.
Every output of the default data says it is SYNTHETIC.
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
from mambaseq.audio import (CLIP_LEN, DIGITS, SAMPLE_RATE, SPLITS, Digits, balanced_pick, decode, fix_length,
                            load_audio, save_wav, silence_token, spread, with_start)
from mambaseq.audio.features import save_mel, save_mel_grid
from mambaseq.audio.listen import Clip, Section, write_listening_page
from mambaseq.audio.metrics import (DigitClassifier, accuracy, classify, continuation_scores, sample_metrics,
                                    train_classifier)
from mambaseq.data_prep import sc09
from mambaseq.fileio import read_json, write_json
from mambaseq.generation import sample
from mambaseq.settings import ConfigError
from mambaseq.training import lm_loss, resolve_device
from mambaseq.training import train as train_loop
from mambaseq.training.evaluation import eval_loop, next_token_bits

Config = runs.Config
LN2 = math.log(2)


# --- configuration and data -------------------------------------------------------------------------
SETTINGS = {
    "classifier.epochs": "int>=1", "classifier.batch_size": "int>=1",
    "classifier.lr": "float>0", "eval.val_clips": "int>=1", "eval.nll_clips": "int>=1", "eval.batch_size": "int>=1",
    "generate.n_samples": "int>=1", "generate.batch_size": "int>=1", "generate.seconds": "float>0",
    "generate.temperature": "float>0", "generate.top_k": "int>=0", "generate.top_p": "prob",
    "generate.n_continuations": "int>=0", "generate.continuation_prefix_seconds": "float>0",
    "generate.mel_examples": "int>=0",
}


def load_config(overrides: Sequence[str] = (), config_name: str = "audio") -> Config:
    """``configs/<config_name>.yaml`` with Hydra overrides, every setting checked by name (ConfigError)
    before anything runs."""
    cfg = runs.load_config(config_name, overrides, SETTINGS)
    name, g = cfg.get("run_name"), cfg["generate"]
    if name is not None and (not isinstance(name, str) or not name or "/" in name or name.startswith(".")):
        raise ConfigError(f"run_name={name!r}: must be null or a folder name (no '/', not starting with '.')")
    n_prefix, n_total = (int(round(g[k] * SAMPLE_RATE)) for k in ("continuation_prefix_seconds", "seconds"))
    if g["n_continuations"] and not 1 <= n_prefix < n_total:
        raise ConfigError(f"generate.continuation_prefix_seconds={g['continuation_prefix_seconds']}: must give at "
                          f"least one sample and be shorter than generate.seconds={g['seconds']} (the rest is "
                          f"generated)")
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
    """``<out_dir>/<run_name>``, or ``<out_dir>/<synthetic|sc09>_<backbone>`` when run_name is null."""
    if cfg.get("run_name"):
        return runs.run_dir(cfg, cfg["run_name"])
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
        print(f"[audio] step {step}/{tc.max_steps}: val NLL {bits:.3f} bits/sample "
              f"({time.perf_counter() - t_start:.0f} s in this command)", flush=True)  # also with the bar off
        return {"loss": bits * LN2, "bits_per_sample": bits}

    model = build_model(cfg)
    n_params, t_start = runs.n_params(model), time.perf_counter()
    print(f"[audio] {data.label}: training {type(model).__name__} ({n_params / 1e6:.2f}M params) on "
          f"{n} clips, {tc.batch_size} x {min(tc.seq_len, T)} samples per step -> {out}")
    res = train_loop(model, lm_loss, batch_fn, tc, out, eval_fn=eval_fn, resume=resume,
                     extra_state={"synthetic_data": data.synthetic, "data_dir": str(data.dir)})
    summary = {"data": data.label, "synthetic_data": data.synthetic, "params": n_params, "steps": res.step,
               "max_steps": tc.max_steps, "complete": res.step >= tc.max_steps,
               "train_bits_per_sample": res.metrics.get("train/bits_per_token"),
               "val_bits_per_sample": res.metrics.get("val/bits_per_sample"),
               "tokens_per_s": res.tokens_per_s, "wall_s": res.wall_s, "stopped_early": res.stopped_early,
               "peak_memory_gib": res.peak_memory_gib, "peak_rss_gib": res.peak_rss_gib,
               "config": cfg}  # the run describes itself
    prev = out / "train_summary.json"
    calls = read_json(prev).get("calls", []) if resume and prev.is_file() else []
    summary["calls"] = [*calls, {"to_step": res.step, "wall_s": res.wall_s, "tokens_per_s": res.tokens_per_s}]
    summary["wall_s_all_calls"] = sum(c["wall_s"] for c in summary["calls"])
    write_json(summary, out / "train_summary.json", indent=1)

    def fmt(v: float | None) -> str:  # None: this call ended before its first train log
        return "n/a" if v is None else f"{v:.3f}"

    print(f"[audio] trained to step {res.step}/{tc.max_steps}, {res.wall_s:.0f} s in this command "
          f"({res.tokens_per_s:.0f} samples/s); "
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


def _write_clip(sdir: Path, name: str, wave: np.ndarray, with_mel: bool) -> str:
    """``<sdir>/<name>.wav`` and, with ``with_mel``, ``<sdir>/mel/<name>.png`` (the listening page's cells)."""
    save_wav(sdir / f"{name}.wav", wave)
    if with_mel:
        save_mel(sdir / "mel" / f"{name}.png", wave)
    return f"{name}.wav"


def _clear_samples(sdir: Path) -> None:
    """A new set of samples replaces the old one entirely (no stale clip is scored or shown)."""
    for pattern in ("gen_*.wav", "cont_*.wav", "src_*.wav", "real_*.wav", "mel/*.png"):
        for old in sdir.glob(pattern):
            old.unlink()


def generate(cfg: Config, data: Digits) -> Path:
    """Sample with the recurrent step and write ``<run>/samples/``: ``gen_*.wav`` (unconditional, from the
    silence token), ``cont_*.wav`` (continuations: the quantized first ``continuation_prefix_seconds`` of a
    real test clip, fed through the model in parallel, then generated to ``seconds``) with ``src_*.wav``
    (the real clip continued) and ``real_*.wav`` (real test clips for comparison), mel PNGs of the first
    ``mel_examples`` of each kind under ``mel/``, samples.json (files, true digits of the continued
    clips, log-likelihoods) and a generated-vs-real mel grid. Test clips are picked balanced over digits."""
    g = cfg["generate"]
    model, out = trained_model(cfg, data)
    device = next(model.parameters()).device
    start, n_total = silence_token(data.quantization), int(round(g["seconds"] * SAMPLE_RATE))
    n_prefix = int(round(g["continuation_prefix_seconds"] * SAMPLE_RATE))
    gen = torch.Generator(device=device).manual_seed(cfg["seed"])
    kw = dict(temperature=g["temperature"], top_k=g["top_k"], top_p=g["top_p"], generator=gen)
    sdir, n_mel = out / "samples", g["mel_examples"]
    (sdir / "mel").mkdir(parents=True, exist_ok=True)
    _clear_samples(sdir)
    records, cont_records, t0 = [], [], time.perf_counter()
    with _sampling_threads(device):
        for i in range(0, g["n_samples"], g["batch_size"]):
            b = min(g["batch_size"], g["n_samples"] - i)
            res = sample(model, n_total, batch_size=b, start_token=start, **kw)
            for j in range(b):
                k = i + j
                f = _write_clip(sdir, f"gen_{k:03d}", decode(res.tokens[j].cpu().numpy(), data.quantization), k < n_mel)
                records.append({"file": f, "loglik_nats": float(res.loglik[j]),
                                "bits_per_sample": float(res.bits_per_token[j]), "generated_samples": res.n_new})
        t_uncond = time.perf_counter() - t0
        picks = balanced_pick(data.labels["test"], g["n_continuations"], cfg["seed"])
        for i in range(0, len(picks), g["batch_size"]):
            rows = picks[i : i + g["batch_size"]]
            prefix = with_start(data.tokens["test"][rows, :n_prefix], start)  # [start] + the real opening
            res = sample(model, n_total - n_prefix, prefix=prefix, return_prefix=True, **kw)
            for j, row in enumerate(rows.tolist()):
                k, label = i + j, int(data.labels["test"][row])
                wave = decode(res.tokens[j, 1:].cpu().numpy(), data.quantization)
                f = _write_clip(sdir, f"cont_{k:03d}", wave, k < n_mel)
                src = _write_clip(sdir, f"src_{k:03d}", data.wave["test"][row].numpy(), k < n_mel)
                cont_records.append({"file": f, "source_file": src, "test_index": row, "label": label,
                                     "digit": DIGITS[label], "prefix_samples": n_prefix,
                                     "loglik_nats": float(res.loglik[j]),
                                     "bits_per_sample": float(res.bits_per_token[j]), "generated_samples": res.n_new})
    wall = time.perf_counter() - t0
    real = balanced_pick(data.labels["test"], n_mel, cfg["seed"] + 1)
    real_records = [{"file": _write_clip(sdir, f"real_{k:03d}", data.wave["test"][row].numpy(), True),
                     "test_index": int(row), "label": int(data.labels["test"][row])}
                    for k, row in enumerate(real.tolist())]
    n_new = g["n_samples"] * n_total + len(cont_records) * (n_total - n_prefix)
    meta = {"data": data.label, "synthetic_data": data.synthetic, "settings": g, "quantization": data.quantization,
            "wall_s": wall, "unconditional_wall_s": t_uncond, "samples_per_s": n_new / wall,
            "samples": records, "continuations": cont_records, "real": real_records}
    write_json(meta, sdir / "samples.json", indent=1)
    if n_mel:
        gen_wave = np.stack([load_audio(sdir / r["file"]) for r in records[:n_mel]])
        save_mel_grid(sdir / "mel_generated_vs_real.png",
                      {"generated": gen_wave, f"real ({data.label})": data.wave["test"][real].numpy()})
    print(f"[audio] wrote {len(records)} samples and {len(cont_records)} continuations of real test clips "
          f"({g['continuation_prefix_seconds']} s given) to {sdir} in {wall:.0f} s ({meta['samples_per_s']:.0f} "
          f"samples/s incl. the batch); mean model NLL of the unconditional samples "
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


def _clips(sdir: Path, files: Sequence[str]) -> torch.Tensor:
    """WAVs of ``sdir`` as (n, CLIP_LEN) float32, each centred and cut or padded to 1 s (the classifier's input)."""
    return torch.from_numpy(np.stack([fix_length(load_audio(sdir / f), CLIP_LEN) for f in files]))


def listening_page(out: Path, sdir: Path, clf: DigitClassifier, meta: dict[str, Any], title: str) -> Path:
    """``<run>/listen.html``: continuations beside the real clip they continue, unconditional samples, real
    test clips; each a player, its mel spectrogram and what the digit classifier hears."""
    n = meta["settings"]["mel_examples"]
    rel = sdir.relative_to(out)

    def cell(f: str, text: str) -> Clip:
        probs = classify(clf, _clips(sdir, [f]))[0][0]
        heard = f"classifier: {DIGITS[int(probs.argmax())]} ({probs.max():.2f})"
        return Clip(str(rel / f), str(rel / "mel" / f.replace(".wav", ".png")), f"{f}: {text}; {heard}")

    prefix_s = meta["settings"]["continuation_prefix_seconds"]
    sections = [
        Section("Continuations of real test clips", [
            [cell(r["source_file"], f"real '{r['digit']}'"),
             cell(r["file"], f"first {prefix_s} s real, rest generated")] for r in meta["continuations"][:n]],
            note=f"Left: the real test clip. Right: its first {prefix_s} s (quantized) fed to the model, the rest "
                 "generated. The digit is kept when the classifier hears the true digit on the right."),
        Section("Unconditional samples", [[cell(r["file"], "generated")] for r in meta["samples"][:n]]),
        Section("Real test clips", [[cell(r["file"], f"real '{DIGITS[r['label']]}'")] for r in meta["real"][:n]]),
    ]
    return write_listening_page(out / "listen.html", title, [sec for sec in sections if sec.rows],
                                intro=f"{meta['data']}; quantization {meta['quantization']}; sampling "
                                      f"temperature {meta['settings']['temperature']}. Spectrograms: log-mel, "
                                      "64 bands, 10 ms hop, one colour scale.")


def evaluate(cfg: Config, data: Digits) -> dict[str, Any]:
    """Test NLL (bits/sample); IS/mIS/AM/FID of the unconditional samples and of held-out real clips;
    continuation accuracy (the digit classifier on continued test clips vs their true digit, with its
    ceiling and the opening-only control); writes metrics.json and listen.html."""
    model, out = trained_model(cfg, data)
    device = next(model.parameters()).device
    clf, acc = get_classifier(cfg, data)
    sdir = out / "samples"
    if not (sdir / "samples.json").is_file():
        raise FileNotFoundError(f"{sdir}: no generated samples; run `mambaseq audio generate` first")
    meta = read_json(sdir / "samples.json")
    gen = _clips(sdir, [r["file"] for r in meta["samples"]])
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
        "continuation_accuracy": None,
    }
    cont = meta["continuations"]
    if cont:
        res["continuation"] = continuation_scores(
            clf, _clips(sdir, [r["file"] for r in cont]), _clips(sdir, [r["source_file"] for r in cont]),
            torch.tensor([r["label"] for r in cont]), cont[0]["prefix_samples"])
        res["continuation_accuracy"] = res["continuation"]["continued_accuracy"]
    page = listening_page(out, sdir, clf, meta, f"{type(model).__name__} on {data.label}: {out.name}")
    write_json(res, out / "metrics.json", indent=1)
    print(f"\n[audio] {data.label} -> {out / 'metrics.json'}; listen: {page}")
    print(f"  test NLL {test_nll:.3f} bits/sample ({res['test_nll_clips']} clips, {data.quantization}); "
          f"digit classifier test accuracy {acc:.3f} (chance 0.100)")
    print(f"  {'':28s} {'n':>5s} {'IS':>7s} {'mIS':>9s} {'AM':>7s} {'FID':>9s}")
    for name in ("generated", "real_val_same_n", "real_val_all"):
        r = res[name]
        print(f"  {name:28s} {r['n']:5d} {r['IS']:7.3f} {r['mIS']:9.3f} {r['AM']:7.3f} {r['FID']:9.3f}")
    print("  (IS, mIS higher is better, at most 10 for IS; AM, FID lower is better)")
    if cont:
        c = res["continuation"]
        fmt = lambda k: f"{c[k]:.3f} [{c[k + '_ci95'][0]:.3f}, {c[k + '_ci95'][1]:.3f}]"  # noqa: E731
        print(f"  continuation accuracy (digit kept, {c['n']} test clips, first {c['prefix_samples'] / SAMPLE_RATE:g} s "
              f"given): {fmt('continued_accuracy')}; the real clips (ceiling) {fmt('real_source_accuracy')}; "
              f"the opening alone {fmt('prefix_only_accuracy')} (95% Wilson intervals)")
    return res


def run_all(cfg: Config, resume: bool = False) -> dict[str, Any]:
    """prepare -> classifier -> train -> generate -> evaluate; returns the metrics. With train.steps_per_call
    a call that leaves training unfinished stops after its checkpoint and returns {"complete": False, ...}:
    the same command with --resume continues, and the call that finishes training samples and evaluates."""
    t0 = time.perf_counter()
    data = Digits(prepare(cfg), cfg["data"]["quantization"])
    print(f"[audio] data: {data.label} at {data.dir} "
          + ", ".join(f"{s} {len(data.labels[s])}" for s in SPLITS))
    get_classifier(cfg, data)
    summary = read_json(train(cfg, data, resume=resume) / "train_summary.json")
    if not summary["complete"]:
        print(f"[audio] training at step {summary['steps']}/{summary['max_steps']}: run the same command with "
              f"--resume to continue; sampling and metrics follow the last step ({time.perf_counter() - t0:.0f} s)")
        return {"complete": False, "steps": summary["steps"], "max_steps": summary["max_steps"]}
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
