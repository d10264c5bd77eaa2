"""SC09 ablation on our digits at one equal step budget: complex vs real SSM, SaShiMi vs a flat backbone,
mu-law vs linear quantization. Each variant is its own run of the audio pipeline (``mambaseq audio``) in
``<work>/runs/<variant>``: train, generate (unconditional samples + continuations of real test clips),
evaluate. Prints one table and writes JSON (``bench/results/audio_ablation_<device>_<time>.json``).

    python bench/bench_audio_ablation.py --quick                         # CPU smoke test: tiny models, 4 steps
    python bench/bench_audio_ablation.py experiment=sc09_gpu --units 2   # GPU: repeat until it says "done"
    python bench/bench_audio_ablation.py --grid full experiment=sc09_gpu train.max_steps=400

Grid ``paper`` (default, 4 runs) changes one factor at a time around the baseline, the Mamba paper's SC09
model (SaShiMi U-Net of Mamba blocks, complex SSM, mu-law; Gu & Dao 2023, Sec. 4.4): real SSM (S4D-Real
initialisation instead of S4D-Lin; the paper's audio ablation of the SSM parameterisation), a flat Mamba
backbone (the paper compares SaShiMi-style pooling against none), linear instead of mu-law 8-bit
quantization (WaveNet / SaShiMi use mu-law). One factor at a time costs half the full factorial and answers
each question against the same baseline; interactions are not measured (``--grid full``: all 8 runs).

The flat backbone has the SaShiMi's d_model and as many Mamba blocks (2 n_layer (len(pool) + 1)), all at the
full 16 kHz rate: every SaShiMi scale costs about the same projection FLOPs per sample (width x2 at a quarter
of the rate), so the two match in projection FLOPs, the flat one doing ~1.7x the scan work with ~1/7 the
parameters (the table gives parameters and samples/s).

Work is done in units, each a training command of ``train.steps_per_call`` steps (the whole budget when 0)
or one variant's generate + evaluate; ``--units N`` stops after N (a GPU command of bounded length) and a
re-run continues where it stopped (checkpoints, ``--resume``). Test NLL (bits/sample) compares only runs
of the same quantization: mu-law and linear classes are different 256-way targets.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mambaseq import runs  # noqa: E402
from mambaseq.fileio import read_json, write_json  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BASELINE = ("sashimi", "complex", "mulaw")
FACTORS = (("sashimi", "mamba"), ("complex", "real"), ("mulaw", "linear"))
# --quick: tiny models, a 4-step budget and a few clips, so the whole grid runs in seconds on one CPU core
QUICK = ["audio_model.d_model=8", "audio_model.n_layer=1", "audio_model.d_state=4", "data.seq_len=256",
         "train.max_steps=4", "train.batch_size=2", "train.warmup_steps=1", "train.progress=false",
         "train.eval_every=0", "train.ckpt_every=0", "classifier.epochs=1", "eval.val_clips=1", "eval.nll_clips=2",
         "eval.batch_size=2", "generate.n_samples=4", "generate.n_continuations=4", "generate.batch_size=4",
         "generate.seconds=0.02", "generate.continuation_prefix_seconds=0.01", "generate.mel_examples=1",
         "data.max_voices=6", "data.accents_per_voice=1"]


def variants(grid: str) -> list[tuple[str, str, str]]:
    """(backbone, ssm, quantization) per run: ``paper`` one factor at a time around BASELINE, ``full`` all 8."""
    if grid == "full":
        return list(itertools.product(*FACTORS))
    if grid != "paper":
        raise ValueError(f"--grid must be 'paper' or 'full', got {grid!r}")
    out = [BASELINE]
    for i, (_, other) in enumerate(FACTORS):
        out.append(tuple(other if j == i else v for j, v in enumerate(BASELINE)))
    return out


def variant_overrides(base: dict, backbone: str, ssm: str, quant: str) -> list[str]:
    """Hydra overrides of one variant on top of the composed base config (sizes of the SaShiMi in ``base``)."""
    m = base["audio_model"]
    over = [f"audio_model={backbone}", f"audio_model.d_model={m['d_model']}", f"audio_model.d_state={m['d_state']}",
            f"audio_model.complex={str(ssm == 'complex').lower()}", f"data.quantization={quant}",
            f"run_name={backbone}-{ssm}-{quant}"]
    if backbone == "mamba":  # as many blocks as the SaShiMi, all at 16 kHz
        over.append(f"audio_model.n_layer={2 * m['n_layer'] * (len(m.get('pool', [4, 4])) + 1)}")
    else:
        over.append(f"audio_model.n_layer={m['n_layer']}")
    return over


def _row(name: str, run: Path) -> dict:
    met, tr = read_json(run / "metrics.json"), read_json(run / "train_summary.json")
    c = met.get("continuation") or {}
    g = met["generated"]
    return {"variant": name, "run": str(run), "params": tr["params"], "steps": tr["steps"],
            "train_samples_per_s": tr["tokens_per_s"], "train_wall_s": tr["wall_s_all_calls"],
            "quantization": met["quantization"], "test_nll_bits_per_sample": met["test_nll_bits_per_sample"],
            "IS": g["IS"], "mIS": g["mIS"], "AM": g["AM"], "FID": g["FID"], "n_samples": g["n"],
            "continuation_accuracy": met["continuation_accuracy"],
            "continuation_accuracy_ci95": c.get("continued_accuracy_ci95"),
            "continuation_n": c.get("n"), "real_source_accuracy": c.get("real_source_accuracy"),
            "prefix_only_accuracy": c.get("prefix_only_accuracy"), "synthetic_data": met["synthetic_data"],
            "real_val_same_n": {k: met["real_val_same_n"][k] for k in ("IS", "mIS", "AM", "FID")},
            "classifier_test_accuracy": met["classifier_test_accuracy"]}


def run_grid(overrides: list[str], grid: str, work: Path, units: int, data_dir: Path | None) -> tuple[list, int]:
    """Advance the grid by at most ``units`` units (0: all); returns (rows of finished variants, units left)."""
    audio = runs.load_pipeline("audio")
    from mambaseq.audio import Digits

    base = audio.load_config([*overrides, f"out_dir={work / 'runs'}"])
    data_path = data_dir or audio.prepare(base)
    rows, done, left = [], 0, 0
    for backbone, ssm, quant in variants(grid):
        name = f"{backbone}-{ssm}-{quant}"
        cfg = audio.load_config([*overrides, f"out_dir={work / 'runs'}",
                                 *variant_overrides(base, backbone, ssm, quant)])
        data = Digits(data_path, quant)
        run = audio.run_dir(cfg, data)
        summary = run / "train_summary.json"
        while not (summary.is_file() and read_json(summary)["complete"]):
            if units and done >= units:
                break
            print(f"[ablation] {name}: training", flush=True)
            audio.get_classifier(cfg, data)  # shared by every variant (cached under out_dir)
            audio.train(cfg, data, resume=True)
            done += 1
        finished = summary.is_file() and read_json(summary)["complete"]
        if finished and not (run / "metrics.json").is_file() and not (units and done >= units):
            print(f"[ablation] {name}: generate + evaluate", flush=True)
            audio.generate(cfg, data)
            audio.evaluate(cfg, data)
            done += 1
        if (run / "metrics.json").is_file() and finished:
            rows.append(_row(name, run))
        else:
            tc = runs.train_config(cfg, int(cfg["data"]["seq_len"]))
            steps = read_json(summary)["steps"] if summary.is_file() else 0
            left += -(-(tc.max_steps - steps) // (tc.steps_per_call or tc.max_steps)) + 1
    return rows, left


def table(rows: list[dict]) -> str:
    head = (f"{'variant':28s} {'params':>8s} {'steps':>6s} {'samples/s':>10s} {'NLL b/s':>8s} {'IS':>6s} "
            f"{'mIS':>8s} {'AM':>6s} {'FID':>8s} {'cont. acc [95% CI]':>22s}")
    lines = [head]
    for r in rows:
        ci = r["continuation_accuracy_ci95"]
        cont = "n/a" if ci is None else f"{r['continuation_accuracy']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"
        lines.append(f"{r['variant']:28s} {r['params'] / 1e6:7.2f}M {r['steps']:6d} {r['train_samples_per_s']:10.0f} "
                     f"{r['test_nll_bits_per_sample']:8.3f} {r['IS']:6.2f} {r['mIS']:8.2f} {r['AM']:6.2f} "
                     f"{r['FID']:8.2f} {cont:>22s}")
    if rows:
        ref, ceiling = rows[0]["real_val_same_n"], rows[0]["real_source_accuracy"]
        ceiling_text = "" if ceiling is None else f"{ceiling:.3f} (ceiling)"
        lines.append(f"{'real held-out clips (same n)':28s} {'':8s} {'':6s} {'':10s} {'':8s} {ref['IS']:6.2f} "
                     f"{ref['mIS']:8.2f} {ref['AM']:6.2f} {ref['FID']:8.2f} {ceiling_text:>22s}")
    lines.append("NLL in bits/sample compares only rows of the same quantization (mu-law vs linear classes differ); "
                 "IS, mIS higher is better; AM, FID lower; continuation accuracy: the digit classifier on test clips "
                 "continued after their opening, vs the true digit.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the audio pipeline, e.g. experiment=sc09_gpu")
    ap.add_argument("--quick", action="store_true", help="tiny models and a 4-step budget (CPU smoke test)")
    ap.add_argument("--grid", default="paper", choices=["paper", "full"])
    ap.add_argument("--units", type=int, default=0, help="stop after this many training calls / evaluations (0: all)")
    ap.add_argument("--work", type=Path, default=None, help="runs and data (default runs/audio_ablation[_quick])")
    ap.add_argument("--data-dir", type=Path, default=None, help="a prepared digit set to use as it is")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/audio_ablation_...)")
    a = ap.parse_args(argv)
    if a.units < 0:
        ap.error(f"--units must be >= 0, got {a.units}")
    work = a.work or Path("runs") / ("audio_ablation_quick" if a.quick else "audio_ablation")
    overrides = [*(QUICK if a.quick else []), f"data.dir={work / 'data'}", *a.overrides]
    t0 = time.perf_counter()
    rows, left = run_grid(overrides, a.grid, work, a.units, a.data_dir)
    print("\n" + table(rows))
    if left:
        print(f"\n[ablation] {len(rows)} of {len(variants(a.grid))} variants done, {left} unit(s) left: run the same "
              f"command again ({time.perf_counter() - t0:.0f} s in this command)")
        return 0
    device = torch.cuda.get_device_name(0).replace(" ", "_") if torch.cuda.is_available() else "cpu"
    out = a.out or RESULTS / f"audio_ablation_{device}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json({"device": device, "grid": a.grid, "quick": a.quick, "overrides": a.overrides, "rows": rows,
                "note": "NLL bits/sample is comparable only between rows of the same quantization"}, out, indent=1)
    print(f"\n[ablation] done: {out} ({time.perf_counter() - t0:.0f} s in this command)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
