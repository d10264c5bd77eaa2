"""Next-token genome pretraining: prepare -> train -> evaluate -> generate (-> finetune the apes classifier).

    mambaseq pretrain run                                  # CPU job: human chr20 (vt-examples) or SYNTHETIC
    mambaseq pretrain run experiment=pretrain_context_scaling         # 2^10 ... 2^20 with seq-length warmup
    mambaseq pretrain run experiment=pretrain_model_scaling           # model sizes at L = 1024
    mambaseq pretrain generate generate.prompt_fasta=my.fa            # continue a FASTA record
    torchrun --nproc_per_node=2 -m mambaseq.pipelines.pretrain train  # data parallel (DDP), same results
    python -m mambaseq.pipelines.pretrain ...                          # the same without the console script

``finetune`` trains the great-apes classifier from the pretrained LM and from scratch (same data, steps and
seed) and compares them; ``finetune.enabled=true`` makes it part of ``run``.

The model sees ``seq_len`` bases and predicts the next one at every position; bits per base are measured
on held-out regions, overall and by how much context the prediction had (loss_vs_position.csv/.png).
``objective=mlm`` trains a masked LM instead (BERT masking, for bidirectional / RC-equivariant DNA models):

    mambaseq pretrain run objective=mlm model.bidirectional=true model.rc_equivariant=true
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mambaseq import runs
from mambaseq.data import (VOCAB, ShardedLMBatches, TiledWindows, TokenStore, decode, describe, format_region,
                           genome_splits, parse_region, sharded_eval_batches)
from mambaseq.data.dna import N_ID
from mambaseq.data.kmers import compare_to_real
from mambaseq.data_prep.pretrain import prepare_genome
from mambaseq.fileio import write_json
from mambaseq.generation import sample, sequence_loglik
from mambaseq.model import MambaLMHeadModel
from mambaseq.reports import plot_curves, write_fasta, write_position_curve
from mambaseq.settings import ConfigError
from mambaseq.training import MaskedBatches, latest_checkpoint, lm_loss, mlm_loss, resolve_device
from mambaseq.training import train as train_loop
from mambaseq.training.distributed import dist_info, global_mean_loss, rank_zero_first, session
from mambaseq.training.evaluation import (bits_per_token, eval_loop, masked_batches, masked_bits, next_token_bits,
                                          position_buckets, reduce_sums)

Config = runs.Config


# --- configuration ---------------------------------------------------------------------------------------
SETTINGS = {
    "data.seq_lens": "[int>=1]|null", "data.region_size": "int>=2", "data.fractions": "fractions",
    "data.min_gap": "int>=1", "data.seed": "int>=0", "data.sim_length": "int>=1", "data.rc_augment": "bool",
    "eval.val_tokens": "int>=1", "eval.test_tokens": "int>=1", "eval.batch_tokens": "int>=1",
    "generate.enabled": "bool", "generate.n_samples": "int>=1", "generate.prompt_len": "int>=1",
    "generate.n_new": "int>=1", "generate.temperature": "float>0", "generate.top_k": "int>=0",
    "generate.top_p": "prob", "generate.real_bases": "int>=1", "finetune.enabled": "bool",
}


def load_config(overrides: Sequence[str] = (), config_name: str = "pretrain") -> Config:
    """``configs/<config_name>.yaml`` with Hydra overrides, every setting checked by name (ConfigError)
    before anything runs, and that a context fits in a split block."""
    cfg = runs.load_config(config_name, overrides, SETTINGS)
    d = cfg["data"]
    for L in d.get("seq_lens") or [d["seq_len"]]:
        if L + 1 > int(d["region_size"]):
            raise ConfigError(f"data.seq_len={L}: a window of seq_len + 1 bases must fit in data.region_size="
                              f"{d['region_size']}")
    return cfg


def is_mlm(cfg: Config) -> bool:
    """The run's ``objective``: clm (next-token LM, False) | mlm (masked LM, True); ValueError otherwise."""
    if cfg.get("objective", "clm") not in ("clm", "mlm"):
        raise ValueError(f"objective must be clm (next-token) or mlm (masked LM), got {cfg['objective']!r}")
    return cfg.get("objective") == "mlm"


def sweep(cfg: Config) -> list[tuple[str, int]]:
    """(model size, context length) of every run: sweep.sizes x data.seq_lens (or the single values)."""
    sizes = cfg.get("sweep", {}).get("sizes") or [cfg["model"]["size"]]
    lens = cfg["data"].get("seq_lens") or [cfg["data"]["seq_len"]]
    return [(str(s), int(L)) for s in sizes for L in lens]


def run_dir(cfg: Config, store: TokenStore, size: str, seq_len: int) -> Path:
    mlm = "_mlm" if is_mlm(cfg) else ""  # a masked LM never resumes from (or overwrites) a causal run
    return runs.run_dir(cfg, store.source.get("kind", "data"), size, f"L{seq_len}{mlm}")


def build_model(cfg: Config, size: str | None = None) -> torch.nn.Module:
    """The causal (or, objective=mlm, masked) LM of ``cfg["model"]``, at named ``size`` if given."""
    spec = {**cfg["model"], "size": size or cfg["model"]["size"]}
    if is_mlm(cfg) and not (spec.get("bidirectional") or spec.get("rc_equivariant")):
        warnings.warn("objective=mlm with a causal model: every position sees only the bases to its left, so the "
                      "masked LM learns no more than next-token training does; set model.bidirectional=true "
                      "(and/or model.rc_equivariant=true), as the masked-LM recipe does", UserWarning, stacklevel=2)
    return runs.build_model(spec, "mlm" if is_mlm(cfg) else "lm", vocab_size=len(VOCAB))


# --- data and measurements ---------------------------------------------------------------------------------
def _splits(cfg: Config, store: TokenStore):
    d = cfg["data"]
    return genome_splits(store, int(d["region_size"]), tuple(d["fractions"]), int(d["seed"]), int(d["min_gap"]))


def _bits(cfg: Config, model: torch.nn.Module, windows, device: torch.device, precision: str, seq_len: int
          ) -> dict[str, Any]:
    """Bits per base over every rank's windows: next-token (objective clm) or of the masked bases (mlm),
    overall and per position (``mambaseq.training.evaluation``)."""
    if is_mlm(cfg):
        batches = masked_batches(windows, seq_len, int(cfg["seed"]), float(cfg["mlm_probability"]))
        stats = eval_loop(model, batches, masked_bits, device, precision)
    else:
        stats = eval_loop(model, windows, next_token_bits, device, precision)
    return bits_per_token(reduce_sums(stats))


# --- steps -------------------------------------------------------------------------------------------------
def prepare(cfg: Config) -> TokenStore:
    """Prepare (or reuse) the genome store of ``data.source`` (rank 0 first); prints what data it is."""
    rank = dist_info()[0]
    with rank_zero_first():
        store = prepare_genome(cfg["data"], progress=rank == 0)
    if rank == 0:
        print(f"pretraining data: {describe(store)}")
    return store


def train(cfg: Config, size: str, seq_len: int, resume: bool = False, store: TokenStore | None = None) -> Path:
    """Pretrain on train-split windows (validation on the val split). Returns the run directory."""
    store = store or prepare(cfg)
    rank, world, local = dist_info()
    splits = _splits(cfg, store)
    tcfg = runs.train_config(cfg, seq_len, world, local)
    seed = int(cfg["seed"])
    batch_fn = ShardedLMBatches(store, splits["train"], seed, rank, world, bool(cfg["data"]["rc_augment"]))
    if is_mlm(cfg):
        batch_fn = MaskedBatches(batch_fn, seed, float(cfg["mlm_probability"]), rank, world)
    device = resolve_device(tcfg.device)
    ev = cfg["eval"]

    def eval_fn(model: torch.nn.Module, step: int) -> dict[str, float]:
        wins = sharded_eval_batches(store, splits["val"], seq_len, int(ev["val_tokens"]), int(ev["batch_tokens"]),
                                    seed, rank, world)
        return {"bits_per_base": _bits(cfg, model, wins, device, tcfg.precision, seq_len)["bits_per_base"]}

    torch.manual_seed(seed)  # identical initial weights on every rank
    model = build_model(cfg, size)
    out = run_dir(cfg, store, size, seq_len)
    if rank == 0:
        print(f"pretraining {size} ({runs.n_params(model):,} params) on {seq_len:,}-base windows, {tcfg.max_steps} "
              f"steps x {tcfg.batch_size * world} windows ({world} process(es)) -> {out}")
    loss_fn = global_mean_loss(mlm_loss if is_mlm(cfg) else lm_loss, world)
    res = train_loop(model, loss_fn, batch_fn, tcfg, out, eval_fn=eval_fn, resume=resume,
                     extra_state={"store": str(store.path), "seq_len": seq_len, "data": describe(store),
                                  "world_size": world})
    if rank == 0 and (res.steps_run or not (out / "train_summary.json").is_file()):  # finished + resumed: kept
        write_json({**res.summary(), "world_size": world, "device": str(device), **res.metrics},
                   out / "train_summary.json")
    return out


def evaluate(cfg: Config, size: str, seq_len: int, store: TokenStore | None = None, split: str = "test"
             ) -> dict[str, Any]:
    """Bits per base of the latest checkpoint on held-out windows + the per-position loss curve."""
    store = store or prepare(cfg)
    rank, world, local = dist_info()
    out = run_dir(cfg, store, size, seq_len)
    ckpt = runs.require_checkpoint(out, "pretrain")
    tcfg = runs.train_config(cfg, seq_len, world, local)
    device = resolve_device(tcfg.device)
    model = runs.load_model(ckpt).to(device)
    ev, seed = cfg["eval"], int(cfg["seed"])
    t0 = time.perf_counter()
    wins = sharded_eval_batches(store, _splits(cfg, store)[split], seq_len, int(ev["test_tokens"]),
                                int(ev["batch_tokens"]), seed, rank, world)
    r = _bits(cfg, model, wins, device, tcfg.precision, seq_len)
    dt = time.perf_counter() - t0
    rows = position_buckets(r["bits_sum"], r["count"])
    m = {"split": split, "seq_len": seq_len, "size": size, "bits_per_base": r["bits_per_base"],
         "n_tokens": r["n_tokens"], "eval_tokens_per_s": r["n_tokens"] / dt, "checkpoint": str(ckpt),
         "data": describe(store), "synthetic": store.synthetic, "position_buckets": rows}
    if rank == 0:
        syn = " [SYNTHETIC data]" if store.synthetic else ""
        write_json(m, out / "eval" / "metrics.json")
        write_position_curve(rows, out / "eval", f"{size}, L={seq_len:,}: {split} {r['bits_per_base']:.3f} "
                             f"bits/base{syn}")
        what = "masked bases" if is_mlm(cfg) else (
            f"predictions; context {rows[-1]['context_from']:,}-{rows[-1]['context_to']:,}: "
            f"{rows[-1]['bits_per_base']:.4f} vs context 1: {rows[0]['bits_per_base']:.4f}")
        print(f"{split.upper()} {r['bits_per_base']:.4f} bits/base (uniform over A/C/G/T: 2.0000; {size}, "
              f"L={seq_len:,}, {r['n_tokens']:,} {what}) -> {out / 'eval'}")
    return m


def prompts(cfg: Config, store: TokenStore) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """-> prompts (n, P) uint8, real continuations (n, n_new) or None, a description per prompt."""
    g = cfg["generate"]
    n, P, n_new, seed = int(g["n_samples"]), int(g["prompt_len"]), int(g["n_new"]), int(cfg["seed"])
    if g.get("prompt_fasta"):
        from mambaseq.data.dna import encode
        from mambaseq.data_prep.fasta import read_fasta

        recs = [(name, encode(seq, where=f"{g['prompt_fasta']} record {name!r}"))
                for name, seq in read_fasta(g["prompt_fasta"])]
        for name, ids in recs:
            if ids.size < P:
                raise ValueError(f"{g['prompt_fasta']}: record {name!r} has {ids.size} bases < "
                                 f"generate.prompt_len={P}")
        picks = [recs[i % len(recs)] for i in range(n)]
        return np.stack([ids[-P:] for _, ids in picks]), None, [f"{nm}:last{P}" for nm, _ in picks]
    if g.get("region"):  # 1-based inclusive, as samtools faidx
        iv = parse_region(g["region"], store, "generate.region")
        ids = np.asarray(store.window(iv.seq, iv.start, iv.end))
        n_frac = float(np.mean(ids == N_ID))
        if n_frac > 0.5:  # an assembly gap (chr20 starts with 60 kb of N): the model was never trained on these
            warnings.warn(f"generate.region={g['region']}: {n_frac:.0%} of the prompt is N (an assembly gap); the "
                          f"model learned from A/C/G/T, so this prompt tells it little. Pick a region with bases",
                          UserWarning, stacklevel=2)
        return np.stack([ids] * n), None, [format_region(iv.seq, iv.start, iv.end)] * n
    tw = TiledWindows(store, _splits(cfg, store)["test"], P + n_new, max_per_label=n, seed=seed)
    if len(tw) < n:
        raise ValueError(f"only {len(tw)} test windows of {P + n_new} bases; lower generate.n_samples/n_new")
    wins = np.stack([tw[i][0].numpy().astype(np.uint8) for i in range(n)])
    return wins[:, :P], wins[:, P:], [format_region(c.seq, c.start, c.start + P) for c in map(tw.coords, range(n))]


class ACGTOnly(torch.nn.Module):
    """The LM with every non-ACGT logit at -inf: samples are plain DNA and log-likelihoods are under the
    model renormalised over A, C, G, T (the trained model puts ~0 mass elsewhere: windows hold no N).
    Same interface as the LM for ``mambaseq.generation`` (forward with cache, step, allocate_inference_cache)."""

    def __init__(self, lm: MambaLMHeadModel):
        super().__init__()
        self.lm = lm

    def _mask(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().masked_fill(torch.arange(logits.shape[-1], device=logits.device) > 3, float("-inf"))

    def forward(self, ids: torch.Tensor, cache=None) -> torch.Tensor:
        return self._mask(self.lm(ids, cache=cache))

    def step(self, ids: torch.Tensor, cache) -> torch.Tensor:
        return self._mask(self.lm.step(ids, cache))

    def allocate_inference_cache(self, batch_size: int, device=None, dtype=None, **kwargs):
        return self.lm.allocate_inference_cache(batch_size, device, dtype, **kwargs)


def generate(cfg: Config, size: str, seq_len: int, store: TokenStore | None = None) -> dict[str, Any]:
    """Sample continuations (recurrent O(1)-memory decoding) -> samples.fasta (+ log-likelihoods) and
    GC / k-mer spectrum comparison with held-out real DNA -> generation.json."""
    if is_mlm(cfg):
        raise ValueError("generation needs a causal LM (objective=clm); this run trains a masked LM")
    store = store or prepare(cfg)
    g, seed = cfg["generate"], int(cfg["seed"])
    out = run_dir(cfg, store, size, seq_len)
    ckpt = runs.require_checkpoint(out, "pretrain")
    device = resolve_device(cfg["train"]["device"])
    model = ACGTOnly(runs.load_model(ckpt)).to(device)
    prompt_ids, real, where = prompts(cfg, store)
    n_new = int(g["n_new"])
    t0 = time.perf_counter()
    res = sample(model, n_new, prefix=torch.from_numpy(prompt_ids).long(), temperature=float(g["temperature"]),
                 top_k=int(g["top_k"]), top_p=float(g["top_p"]),
                 generator=torch.Generator(device=device).manual_seed(seed))
    dt = time.perf_counter() - t0
    toks = res.tokens.cpu().numpy().astype(np.uint8)
    recs = [(f"sample{i} prompt={w} n_new={n_new} loglik_nats={float(res.loglik[i]):.2f} "
             f"bits_per_base={float(res.bits_per_token[i]):.4f} temperature={g['temperature']} top_k={g['top_k']} "
             f"top_p={g['top_p']}", decode(t)) for i, (w, t) in enumerate(zip(where, toks))]
    gen_dir = out / "generated"
    write_fasta(recs, gen_dir / "samples.fasta")
    test = _splits(cfg, store)["test"]
    w = min(4096, max(iv.length for iv in test))  # reference DNA in pieces of up to 4 kb
    ref_tw = TiledWindows(store, test, w, seed=seed + 1, max_per_label=max(1, int(g["real_bases"]) // w))
    ref = [ref_tw[i][0].numpy() for i in range(len(ref_tw))]
    rng = np.random.default_rng(seed)
    gc = float(np.isin(np.concatenate(ref), (1, 2)).mean())
    iid = [rng.choice(4, n_new, p=[(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]).astype(np.uint8) for _ in toks]
    groups = {"samples": list(toks), "iid_gc_matched": iid}
    stats: dict[str, Any] = {"n_samples": len(toks), "n_new": n_new, "prompt_len": int(prompt_ids.shape[1]),
                             "decode_tokens_per_s": len(toks) * n_new / dt,
                             "sample_bits_per_base": res.bits_per_token.tolist(), "prompts": where}
    if real is not None:
        groups["real_continuations"] = list(real)
        full = torch.from_numpy(np.concatenate([prompt_ids, real], 1)).long().to(device)
        ll = sequence_loglik(model, full) - sequence_loglik(model, full[:, : prompt_ids.shape[1]])
        stats["real_continuation_bits_per_base"] = (-ll.cpu() / (n_new * math.log(2))).tolist()
        write_fasta([(f"real{i} {w} continuation of {n_new}", decode(t)) for i, (w, t) in enumerate(zip(where, real))],
                    gen_dir / "real_continuations.fasta")
    stats["spectra"] = compare_to_real(groups, ref)
    stats["synthetic_data"] = store.synthetic
    write_json(stats, gen_dir / "generation.json")
    sp = stats["spectra"]
    print(f"generated {len(toks)} x {n_new} bases ({stats['decode_tokens_per_s']:,.0f} tok/s) -> "
          f"{gen_dir / 'samples.fasta'}; mean {np.mean(stats['sample_bits_per_base']):.3f} bits/base under the model")
    for name in groups:
        print(f"  {name:>20}: GC {sp[name]['gc']:.3f} (real {sp['real_reference']['gc']:.3f})  "
              f"JS k=3 {sp[name]['js_k3']:.4f}  k=6 {sp[name]['js_k6']:.4f} bits")
    return stats


def finetune(cfg: Config, lm_dir: str | Path, resume: bool = True) -> dict[str, Any]:
    """Train + evaluate the great-apes classifier from the LM checkpoint ``lm_dir`` (its architecture and
    backbone weights, a fresh head) and from scratch (the same architecture, fresh weights): the same apes
    data, steps, batches and seed. -> comparison dict (also ``<out_dir>/finetune/comparison.json``)."""
    apes = runs.load_pipeline("apes")
    results = {}
    for arm in ("pretrained", "scratch"):
        # equal steps in both arms: no wall-clock cap unless the user asks for one
        acfg = apes.load_config(["train.max_time_s=0", *(cfg["finetune"].get("apes_overrides") or []),
                                 f"out_dir={Path(cfg['out_dir']) / 'finetune' / arm}", f"seed={cfg['seed']}",
                                 f"init_from={lm_dir}", f"init_weights={arm == 'pretrained'}"])
        store = apes.prepare(acfg)
        L = apes.seq_lens(acfg)[0]
        print(f"--- apes classifier, {arm} backbone ---")
        apes.train(acfg, L, resume=resume, store=store)
        m = apes.evaluate(acfg, L, store=store)
        results[arm] = {k: m[k] for k in ("accuracy", "balanced_accuracy", "chance_uniform", "n_windows",
                                          "test_loss", "synthetic", "source", "seq_len")}
    out = {"init_from": str(lm_dir), **results,
           "gain_accuracy": results["pretrained"]["accuracy"] - results["scratch"]["accuracy"]}
    write_json(out, Path(cfg["out_dir"]) / "finetune" / "comparison.json")
    print(f"apes test accuracy: pretrained {results['pretrained']['accuracy']:.3f} vs scratch "
          f"{results['scratch']['accuracy']:.3f} (chance {results['scratch']['chance_uniform']:.3f})")
    return out


def pretrained_checkpoint(cfg: Config, store: TokenStore | None = None) -> Path:
    """``finetune.init_from`` if set, else the latest checkpoint of the run's first (size, length)."""
    if cfg["finetune"].get("init_from"):
        return Path(cfg["finetune"]["init_from"])
    size, L = sweep(cfg)[0]
    ckpt = latest_checkpoint(run_dir(cfg, store or prepare(cfg), size, L))
    if ckpt is None:
        raise FileNotFoundError("no pretrained checkpoint: run `mambaseq pretrain train` first or set "
                                "finetune.init_from")
    return ckpt


def run_all(cfg: Config, resume: bool = False) -> list[dict[str, Any]]:
    """prepare -> (train -> evaluate) for every (size, length); summary + overlaid curves; then generation
    and the fine-tuning comparison when enabled (rank 0 only)."""
    t0 = time.perf_counter()
    store = prepare(cfg)
    results = []
    for size, L in sweep(cfg):
        train(cfg, size, L, resume=resume, store=store)
        results.append(evaluate(cfg, size, L, store=store))
    if dist_info()[0] != 0:
        return results
    out = Path(cfg["out_dir"])
    summary = [{k: r[k] for k in ("size", "seq_len", "bits_per_base", "n_tokens", "synthetic")} for r in results]
    write_json({"results": summary, "data": describe(store), "wall_s": time.perf_counter() - t0},
               out / "summary.json")
    if len(results) > 1:
        plot_curves({f"{r['size']} L={r['seq_len']:,}": r["position_buckets"] for r in results},
                    out / "loss_vs_position.png", f"test bits/base by context ({describe(store)})")
    for r in summary:
        print(f"  {r['size']:>8} L={r['seq_len']:>9,}  test {r['bits_per_base']:.4f} bits/base")
    size, L = sweep(cfg)[0]
    if cfg["generate"]["enabled"] and is_mlm(cfg):
        print("generation skipped: a masked LM (objective=mlm) does not generate")
    elif cfg["generate"]["enabled"]:
        generate(cfg, size, L, store)
    if cfg["finetune"]["enabled"]:
        finetune(cfg, pretrained_checkpoint(cfg, store))
    return results


# --- CLI -----------------------------------------------------------------------------------------------------
def _prepare(cfg: Config, args) -> None:
    print({k: len(v) for k, v in _splits(cfg, prepare(cfg)).items()}, "gap-free intervals per split")


def _train_each(cfg: Config, args) -> None:
    store = prepare(cfg)
    for size, L in sweep(cfg):
        train(cfg, size, L, resume=args.resume, store=store)


def _evaluate_each(cfg: Config, args) -> None:
    store = prepare(cfg)
    for size, L in sweep(cfg):
        evaluate(cfg, size, L, store=store)


def _generate_each(cfg: Config, args) -> None:
    store = prepare(cfg)
    for size, L in sweep(cfg):
        if dist_info()[0] == 0:
            generate(cfg, size, L, store=store)


COMMAND = runs.Command("pretrain", "next-token genome pretraining (+ generation, fine-tuning)", __doc__, load_config, {
    "prepare": _prepare,
    "train": _train_each,
    "evaluate": _evaluate_each,
    "generate": _generate_each,
    "finetune": lambda cfg, args: finetune(cfg, pretrained_checkpoint(cfg)),
    "run": lambda cfg, args: run_all(cfg, resume=args.resume),
}, session=session)
main = COMMAND.main
_prompts = prompts  # its name before the remodel (issue 11), for scripts written against it

if __name__ == "__main__":
    raise SystemExit(main())
