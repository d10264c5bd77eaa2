"""Fine-tune the great-apes classifier from a pretrained LM (the paper's protocol) and compare with training
from scratch: same apes data, steps, batches and seed; only the initial backbone differs.

    mambaseq pretrain finetune                          # from the pretrain run's latest checkpoint
    mambaseq pretrain finetune finetune.init_from=DIR   # any MambaLMHeadModel / MambaForMaskedLM checkpoint

It drives the apes pipeline through its public functions (``load_config``, ``prepare``, ``train``,
``evaluate``): the pretrained arm gets a step-0 training checkpoint in its run directory holding the
pretrained backbone, a fresh head and a fresh optimizer, and ``apes.train(resume=True)`` continues from it,
so everything else (data, augmentation, schedule, evaluation, reports) is the apes pipeline's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mambaseq.config import MambaConfig
from mambaseq.fileio import write_json
from mambaseq.model import CONFIG_NAME, MambaForSequenceClassification
from mambaseq.training import (TrainConfig, build_optimizer, build_scheduler, latest_checkpoint, list_checkpoints,
                               save_checkpoint)

from . import apes

# the backbone fields an apes model must share with the LM to take its weights
ARCH_FIELDS = ("d_model", "n_layer", "d_state", "d_conv", "expand", "dt_rank", "complex", "norm", "bias",
               "conv_bias", "bidirectional", "rc_equivariant", "kmer_size", "vocab_size")
PRETRAINED_ARCHITECTURES = ("MambaLMHeadModel", "MambaForMaskedLM")


def _apes_cfg(cfg: dict[str, Any], lm_cfg: MambaConfig, arm: str) -> dict[str, Any]:
    f = cfg["finetune"]
    arch = [f"++model.{k}={getattr(lm_cfg, k)}" for k in ARCH_FIELDS if k != "vocab_size"]
    # equal steps in both arms: no wall-clock cap unless the user asks for one
    over = ["train.max_time_s=0", *(f.get("apes_overrides") or []), *arch,
            f"out_dir={Path(cfg['out_dir']) / 'finetune' / arm}", f"seed={cfg['seed']}"]
    return apes.load_config(over)


def _init_from_lm(acfg: dict[str, Any], lm_dir: Path, run: Path, n_labels: int, seq_len: int) -> None:
    """Write ``run``'s step-0 checkpoint: pretrained backbone + fresh head, fresh optimizer/scheduler."""
    ref = apes.build_model(acfg, n_labels)
    torch.manual_seed(int(acfg["seed"]))  # the head's initialisation
    clf = MambaForSequenceClassification.from_pretrained(lm_dir, num_labels=n_labels,
                                                         pooling=acfg["model"]["pooling"])
    want = {k: v.shape for k, v in ref.state_dict().items()}
    got = {k: v.shape for k, v in clf.state_dict().items()}
    if want != got:
        raise ValueError(f"{lm_dir}: pretrained model does not fit the apes classifier ({len(want)} vs {len(got)} "
                         f"tensors, first differences {sorted(set(want.items()) ^ set(got.items()))[:3]})")
    t = TrainConfig.from_dict({**acfg["train"], "seq_len": seq_len, "seed": int(acfg["seed"])})
    opt = build_optimizer(clf, t.lr, t.weight_decay, t.betas)
    sched = build_scheduler(opt, t.warmup_steps, t.max_steps, t.min_lr_ratio)
    torch.manual_seed(int(acfg["seed"]))  # RNG state a fresh apes run would start with
    save_checkpoint(run, 0, clf, opt, sched, {"init_from": str(lm_dir), "data_position": 0}, t.keep_last)


def finetune(cfg: dict[str, Any], lm_dir: str | Path | None = None, resume: bool = True) -> dict[str, Any]:
    """Train + evaluate the apes classifier from ``lm_dir`` and from scratch; -> comparison dict (also
    written to ``<out_dir>/finetune/comparison.json``)."""
    if lm_dir is None:
        from .pretrain import prepare, run_dir, runs

        size, L = runs(cfg)[0]
        lm_dir = latest_checkpoint(run_dir(cfg, prepare(cfg), size, L))
        if lm_dir is None:
            raise FileNotFoundError("no pretrained checkpoint: run `mambaseq pretrain train` first or set "
                                    "finetune.init_from")
    lm_dir = Path(lm_dir)
    lm_cfg, meta = MambaConfig.load(lm_dir / CONFIG_NAME)
    if meta.get("architecture") not in PRETRAINED_ARCHITECTURES:
        raise ValueError(f"{lm_dir}: expected a {' or '.join(PRETRAINED_ARCHITECTURES)} checkpoint, got "
                         f"{meta.get('architecture')!r}")
    results = {}
    for arm in ("pretrained", "scratch"):
        acfg = _apes_cfg(cfg, lm_cfg, arm)
        store = apes.prepare(acfg)
        L = apes.seq_lens(acfg)[0]
        run = apes.run_dir(acfg, store, L)
        if arm == "pretrained" and not list_checkpoints(run):
            _init_from_lm(acfg, lm_dir, run, len(store.label_names), L)
        print(f"--- apes classifier, {arm} backbone ---")
        apes.train(acfg, L, resume=resume or arm == "pretrained", store=store)
        m = apes.evaluate(acfg, L, store=store)
        results[arm] = {k: m[k] for k in ("accuracy", "balanced_accuracy", "chance_uniform", "n_windows",
                                          "test_loss", "synthetic", "source", "seq_len")}
    out = {"init_from": str(lm_dir), **results,
           "gain_accuracy": results["pretrained"]["accuracy"] - results["scratch"]["accuracy"]}
    write_json(out, Path(cfg["out_dir"]) / "finetune" / "comparison.json")
    print(f"apes test accuracy: pretrained {results['pretrained']['accuracy']:.3f} vs scratch "
          f"{results['scratch']['accuracy']:.3f} (chance {results['scratch']['chance_uniform']:.3f})")
    return out
