"""Next-token genome pretraining: prepare -> train -> evaluate -> generate (-> finetune the apes classifier).

    mambaseq pretrain run                                  # CPU job: human chr20 (vt-examples) or SYNTHETIC
    mambaseq pretrain run experiment=pretrain_context_scaling         # 2^10 ... 2^20 with seq-length warmup
    mambaseq pretrain run experiment=pretrain_model_scaling           # model sizes at L = 1024
    mambaseq pretrain generate generate.prompt_fasta=my.fa            # continue a FASTA record
    torchrun --nproc_per_node=2 -m mambaseq.pipelines.pretrain train  # data parallel (DDP), same results
    python -m mambaseq.pipelines.pretrain ...                          # the same without the console script

The model sees ``seq_len`` bases and predicts the next one at every position; bits per base are measured
on held-out regions, overall and by how much context the prediction had (loss_vs_position.csv/.png).
``objective=mlm`` trains a masked LM instead (BERT masking, for bidirectional / RC-equivariant DNA models):

    mambaseq pretrain run objective=mlm model.bidirectional=true model.rc_equivariant=true
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mambaseq.config import MambaConfig
from mambaseq.data import VOCAB, TiledWindows, TokenStore, decode, format_region, parse_region
from mambaseq.fileio import write_json
from mambaseq.generation import sample, sequence_loglik
from mambaseq.masked_lm import MambaForMaskedLM
from mambaseq.model import MambaLMHeadModel, load_pretrained
from mambaseq.settings import ConfigError, check_settings, compose
from mambaseq.training import MaskedBatches, TrainConfig, latest_checkpoint, lm_loss, mlm_loss, resolve_device
from mambaseq.training import train as train_loop

from .pretrain_data import ShardedLMBatches, describe, genome_splits, prepare_genome
from .pretrain_report import (compare_to_real, eval_bits, is_mlm, plot_curves, position_buckets, reduce_eval,
                              write_fasta, write_position_curve)

Config = dict[str, Any]


# --- configuration and distributed set-up ---------------------------------------------------------------
SETTINGS = {
    "seed": "int>=0", "tokens_per_step": "int>=1|null",
    "data.seq_len": "int>=1", "data.seq_lens": "[int>=1]|null", "data.region_size": "int>=2",
    "data.fractions": "[float>=0]", "data.min_gap": "int>=1", "data.seed": "int>=0", "data.sim_length": "int>=1",
    "data.rc_augment": "bool",
    "eval.val_tokens": "int>=1", "eval.test_tokens": "int>=1", "eval.batch_tokens": "int>=1",
    "generate.enabled": "bool", "generate.n_samples": "int>=1", "generate.prompt_len": "int>=1",
    "generate.n_new": "int>=1", "generate.temperature": "float>0", "generate.top_k": "int>=0",
    "generate.top_p": "prob", "generate.real_bases": "int>=1", "finetune.enabled": "bool",
}


def load_config(overrides: Sequence[str] = (), config_name: str = "pretrain") -> Config:
    """Compose ``configs/pretrain.yaml`` (or ``config_name``) with Hydra overrides -> nested dict, checked
    by ``check_config`` (ConfigError naming the key) before anything runs."""
    cfg = compose(config_name, overrides)
    check_config(cfg)
    return cfg


def check_config(cfg: Config) -> None:
    """Every setting the pipeline uses, by dotted key (``mambaseq.settings``), plus the train group as a
    TrainConfig, and that a context fits in a split block; ConfigError names the first bad key."""
    check_settings(cfg, SETTINGS)
    d = cfg["data"]
    if len(d["fractions"]) != 3 or not math.isclose(sum(d["fractions"]), 1.0, abs_tol=1e-6):
        raise ConfigError(f"data.fractions={d['fractions']!r}: must be three train/val/test fractions summing to 1")
    for L in d.get("seq_lens") or [d["seq_len"]]:
        if L + 1 > int(d["region_size"]):
            raise ConfigError(f"data.seq_len={L}: a window of seq_len + 1 bases must fit in data.region_size="
                              f"{d['region_size']}")
    TrainConfig.from_dict({k: v for k, v in cfg["train"].items() if k not in ("seq_len", "seed")})


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises torch.distributed under torchrun (WORLD_SIZE > 1):
    NCCL with one GPU per process on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    dist = torch.distributed
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), local


def runs(cfg: Config) -> list[tuple[str, int]]:
    """(model size, context length) of every run: sweep.sizes x data.seq_lens (or the single values)."""
    sizes = cfg.get("sweep", {}).get("sizes") or [cfg["model"]["size"]]
    lens = cfg["data"].get("seq_lens") or [cfg["data"]["seq_len"]]
    return [(str(s), int(L)) for s in sizes for L in lens]


def run_dir(cfg: Config, store: TokenStore, size: str, seq_len: int) -> Path:
    mlm = "_mlm" if is_mlm(cfg) else ""  # a masked LM never resumes from (or overwrites) a causal run
    return Path(cfg["out_dir"]) / f"{store.source.get('kind', 'data')}_{size}_L{seq_len}{mlm}"


def build_model(cfg: Config, size: str | None = None) -> MambaLMHeadModel | MambaForMaskedLM:
    m = {k: v for k, v in cfg["model"].items() if k not in ("size", "pooling")}
    cls = MambaForMaskedLM if is_mlm(cfg) else MambaLMHeadModel
    return cls(MambaConfig.from_name(size or cfg["model"]["size"], vocab_size=len(VOCAB), **m))


def _splits(cfg: Config, store: TokenStore):
    d = cfg["data"]
    return genome_splits(store, int(d["region_size"]), tuple(d["fractions"]), int(d["seed"]), int(d["min_gap"]))


def _train_config(cfg: Config, seq_len: int, world: int, local_rank: int) -> TrainConfig:
    t = dict(cfg["train"])
    if cfg.get("tokens_per_step"):  # recipes: the same tokens per step at every context length
        t["batch_size"] = max(1, int(cfg["tokens_per_step"]) // seq_len)
    if int(t["batch_size"]) % world:
        raise ValueError(f"train.batch_size={t['batch_size']} (the global batch) must be divisible by the "
                         f"number of processes ({world})")
    t.update(seq_len=seq_len, seed=int(cfg["seed"]), batch_size=int(t["batch_size"]) // world)
    if world > 1 and torch.cuda.is_available() and t.get("device", "auto") == "auto":
        t["device"] = f"cuda:{local_rank}"
    return TrainConfig.from_dict(t)


def _eval_windows(store: TokenStore, intervals, seq_len: int, tokens: int, batch_tokens: int, seed: int,
                  rank: int = 0, world: int = 1):
    """This rank's share of an evenly spread, seeded set of ~``tokens`` held-out windows, in batches."""
    tw = TiledWindows(store, intervals, seq_len + 1, max_per_label=max(1, tokens // seq_len), seed=seed)
    mine = list(range(rank, len(tw), world))
    b = max(1, batch_tokens // seq_len)
    for s in range(0, len(mine), b):
        yield torch.stack([tw[i][0] for i in mine[s: s + b]])


def ddp_lm_loss(world: int, base=lm_loss):
    """``base`` (lm_loss or mlm_loss) whose logged value (loss, acc, bits) is the mean over all ranks, i.e.
    over the global batch; gradients stay local (DDP averages them), so training is unchanged and logs match
    1 process."""
    if world == 1:
        return base

    def loss_fn(model: torch.nn.Module, batch: torch.Tensor):
        loss, m = base(model, batch)
        t = torch.stack([loss.detach().float(), torch.tensor(m["acc"], device=loss.device)])
        torch.distributed.all_reduce(t)
        t /= world
        return loss + (t[0] - loss.detach()), {"acc": float(t[1]), "bits_per_token": float(t[0]) / math.log(2),
                                               "tokens": m["tokens"] * world}
    return loss_fn


# --- steps -------------------------------------------------------------------------------------------------
def prepare(cfg: Config) -> TokenStore:
    """Prepare (or reuse) the genome store of ``data.source``; prints what data it is."""
    rank, world, _ = dist_info()
    if world > 1 and rank > 0:  # rank 0 writes the store first; the others then find it current
        torch.distributed.barrier()
    store = prepare_genome(cfg["data"], progress=rank == 0)
    if world > 1 and rank == 0:
        torch.distributed.barrier()
    if rank == 0:
        print(f"pretraining data: {describe(store)}")
    return store


def train(cfg: Config, size: str, seq_len: int, resume: bool = False, store: TokenStore | None = None) -> Path:
    """Pretrain on train-split windows (validation on the val split). Returns the run directory."""
    store = store or prepare(cfg)
    rank, world, local = dist_info()
    splits = _splits(cfg, store)
    tcfg = _train_config(cfg, seq_len, world, local)
    seed = int(cfg["seed"])
    batch_fn = ShardedLMBatches(store, splits["train"], seed, rank, world, bool(cfg["data"]["rc_augment"]))
    if is_mlm(cfg):
        batch_fn = MaskedBatches(batch_fn, seed, float(cfg["mlm_probability"]), rank, world)
    device = resolve_device(tcfg.device)
    ev = cfg["eval"]

    def eval_fn(model: torch.nn.Module, step: int) -> dict[str, float]:
        wins = _eval_windows(store, splits["val"], seq_len, int(ev["val_tokens"]), int(ev["batch_tokens"]), seed,
                             rank, world)
        r = reduce_eval(eval_bits(cfg, model, wins, device, tcfg.precision, seq_len))
        return {"bits_per_base": r["bits_per_base"]}

    torch.manual_seed(seed)  # identical initial weights on every rank
    model = build_model(cfg, size)
    out = run_dir(cfg, store, size, seq_len)
    if rank == 0:
        n_par = sum(p.numel() for p in model.parameters())
        print(f"pretraining {size} ({n_par:,} params) on {seq_len:,}-base windows, {tcfg.max_steps} steps x "
              f"{tcfg.batch_size * world} windows ({world} process(es)) -> {out}")
    res = train_loop(model, ddp_lm_loss(world, mlm_loss if is_mlm(cfg) else lm_loss), batch_fn, tcfg, out, eval_fn=eval_fn, resume=resume,
                     extra_state={"store": str(store.path), "seq_len": seq_len, "data": describe(store),
                                  "world_size": world})
    if rank == 0:
        write_json({"step": res.step, "tokens_per_s": res.tokens_per_s, "peak_memory_gib": res.peak_memory_gib,
                    "wall_s": res.wall_s, "world_size": world, "device": str(device), **res.metrics},
                   out / "train_summary.json")
    return out


def evaluate(cfg: Config, size: str, seq_len: int, store: TokenStore | None = None, split: str = "test"
             ) -> dict[str, Any]:
    """Bits per base of the latest checkpoint on held-out windows + the per-position loss curve."""
    store = store or prepare(cfg)
    rank, world, local = dist_info()
    out = run_dir(cfg, store, size, seq_len)
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        raise FileNotFoundError(f"{out}: no checkpoint to evaluate; run `mambaseq pretrain train` first")
    device = _train_config(cfg, seq_len, world, local).device
    device = resolve_device(device)
    model = load_pretrained(ckpt).to(device)
    ev, seed = cfg["eval"], int(cfg["seed"])
    t0 = time.perf_counter()
    wins = _eval_windows(store, _splits(cfg, store)[split], seq_len, int(ev["test_tokens"]), int(ev["batch_tokens"]),
                         seed, rank, world)
    model.eval()
    r = reduce_eval(eval_bits(cfg, model, wins, device, cfg["train"]["precision"], seq_len))
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
        print(f"{split.upper()} {r['bits_per_base']:.4f} bits/base ({size}, L={seq_len:,}, {r['n_tokens']:,} "
              f"{what}) -> {out / 'eval'}")
    return m


def _prompts(cfg: Config, store: TokenStore) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
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

    def allocate_inference_cache(self, batch_size: int, device=None, dtype=None):
        return self.lm.allocate_inference_cache(batch_size, device, dtype)


def generate(cfg: Config, size: str, seq_len: int, store: TokenStore | None = None) -> dict[str, Any]:
    """Sample continuations (recurrent O(1)-memory decoding) -> samples.fasta (+ log-likelihoods) and
    GC / k-mer spectrum comparison with held-out real DNA -> generation.json."""
    if is_mlm(cfg):
        raise ValueError("generation needs a causal LM (objective=clm); this run trains a masked LM")
    store = store or prepare(cfg)
    g, seed = cfg["generate"], int(cfg["seed"])
    out = run_dir(cfg, store, size, seq_len)
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        raise FileNotFoundError(f"{out}: no checkpoint; run `mambaseq pretrain train` first")
    device = resolve_device(cfg["train"]["device"])
    model = ACGTOnly(load_pretrained(ckpt)).to(device)
    prompts, real, where = _prompts(cfg, store)
    n_new = int(g["n_new"])
    t0 = time.perf_counter()
    res = sample(model, n_new, prefix=torch.from_numpy(prompts).long(), temperature=float(g["temperature"]),
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
    stats: dict[str, Any] = {"n_samples": len(toks), "n_new": n_new, "prompt_len": int(prompts.shape[1]),
                             "decode_tokens_per_s": len(toks) * n_new / dt,
                             "sample_bits_per_base": res.bits_per_token.tolist(), "prompts": where}
    if real is not None:
        groups["real_continuations"] = list(real)
        full = torch.from_numpy(np.concatenate([prompts, real], 1)).long().to(device)
        ll = sequence_loglik(model, full) - sequence_loglik(model, full[:, : prompts.shape[1]])
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


def run_all(cfg: Config, resume: bool = False) -> list[dict[str, Any]]:
    """prepare -> (train -> evaluate) for every (size, length); summary + overlaid curves; then generation
    and the fine-tuning comparison when enabled (rank 0 only)."""
    t0 = time.perf_counter()
    store = prepare(cfg)
    results = []
    for size, L in runs(cfg):
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
    size, L = runs(cfg)[0]
    if cfg["generate"]["enabled"] and is_mlm(cfg):
        print("generation skipped: a masked LM (objective=mlm) does not generate")
    elif cfg["generate"]["enabled"]:
        generate(cfg, size, L, store)
    if cfg["finetune"]["enabled"]:
        from .pretrain_finetune import finetune

        finetune(cfg, latest_checkpoint(run_dir(cfg, store, size, L)))
    return results


# --- CLI -----------------------------------------------------------------------------------------------------
ACTIONS = ("prepare", "train", "evaluate", "generate", "finetune", "run", "show-config")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``mambaseq pretrain {prepare,train,evaluate,generate,finetune,run,show-config} [overrides ...]``."""
    p = subparsers.add_parser("pretrain", help="next-token genome pretraining (+ generation, fine-tuning)",
                              description=__doc__.split("\n\n")[0])
    _add_args(p)


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=small data.seq_len=4096")
    p.add_argument("--config-name", default="pretrain", help="primary config in mambaseq.configs")
    p.add_argument("--resume", action="store_true", help="continue each run from its latest checkpoint")


def run(args: argparse.Namespace) -> int:
    """CLI entry (``mambaseq pretrain ...``)."""
    cfg = load_config(args.overrides, args.config_name)
    try:
        if args.action == "show-config":
            import yaml

            print(yaml.safe_dump(cfg, sort_keys=False))
        elif args.action == "prepare":
            store = prepare(cfg)
            print({k: len(v) for k, v in _splits(cfg, store).items()}, "gap-free intervals per split")
        elif args.action == "run":
            run_all(cfg, resume=args.resume)
        elif args.action == "finetune":
            from .pretrain_finetune import finetune

            finetune(cfg, cfg["finetune"].get("init_from") or None)
        else:
            store = prepare(cfg)
            for size, L in runs(cfg):
                if args.action == "train":
                    train(cfg, size, L, resume=args.resume, store=store)
                elif args.action == "evaluate":
                    evaluate(cfg, size, L, store=store)
                elif dist_info()[0] == 0:
                    generate(cfg, size, L, store=store)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # all ranks leave together: a gloo rank that tears down while its peer is still in a final
            # collective or writing checkpoints was seen to abort ("terminate called without an active
            # exception", twice in six full CPU test-suite runs)
            torch.distributed.barrier()
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mambaseq.pipelines.pretrain", description=__doc__.split("\n\n")[0])
    _add_args(p)
    return run(p.parse_intermixed_args(argv))  # options may follow the overrides


if __name__ == "__main__":
    raise SystemExit(main())
