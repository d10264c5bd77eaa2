"""Run scaffolding shared by the pipelines (``mambaseq.pipelines.apes``, ``.audio``, ``.pretrain``): the
command line, configuration loading, run folders, the batch-size rule and model construction. A pipeline
module holds only its steps (prepare, train, evaluate, ...) and a ``COMMAND`` built here::

    COMMAND = Command("apes", "great-ape species classification", __doc__, load_config,
                      {"prepare": ..., "train": ..., "evaluate": ..., "run": ...})

    mambaseq apes train model=small data.seq_len=4096      # cli.py: COMMAND.add_to(subparsers)
    python -m mambaseq.pipelines.apes train ...            # the module's main = COMMAND.main

Configs are Hydra YAML in ``mambaseq.configs`` composed into plain nested dicts, checked by dotted key
before anything runs (``mambaseq.settings``). The context length is ``data.seq_len`` and the optional
constant tokens per step ``data.tokens_per_step`` in every pipeline; ``MOVED`` maps keys of older
releases to their place (an override with an old key is renamed, with a FutureWarning).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, ContextManager, Mapping, Sequence

import torch
from torch import nn

from mambaseq.config import MambaConfig
from mambaseq.masked_lm import MambaForMaskedLM
from mambaseq.model import CONFIG_NAME, MambaForSequenceClassification, MambaLMHeadModel, load_pretrained
from mambaseq.sashimi import SaShiMiConfig, SaShiMiLM
from mambaseq.settings import ConfigError, check_settings, compose, group_choices, group_options
from mambaseq.training import TrainConfig, resumable_checkpoint

Config = dict[str, Any]

# command -> module with the pipeline's COMMAND
PIPELINES = {
    "apes": "mambaseq.pipelines.apes",
    "audio": "mambaseq.pipelines.audio",
    "pretrain": "mambaseq.pipelines.pretrain",
}


def load_pipeline(name: str) -> ModuleType:
    """The pipeline module of command ``name`` (one pipeline drives another only through this)."""
    return importlib.import_module(PIPELINES[name])


# --- configuration ----------------------------------------------------------------------------------------
# old key -> new key (the context length and tokens per step live under data. in every pipeline)
MOVED = {"tokens_per_step": "data.tokens_per_step", "train.seq_len": "data.seq_len",
         # audio: prefix-conditioned sampling is now the continuation set beside the unconditional samples
         "generate.prefix_seconds": "generate.continuation_prefix_seconds"}
# settings every pipeline has, with their rules (mambaseq.settings)
SETTINGS = {"seed": "int>=0", "data.seq_len": "int>=1", "data.tokens_per_step": "int>=1|null", "threads": "int>=0|null"}
# primary config -> the name prefix of its experiments (configs/experiment/<prefix>*.yaml)
EXPERIMENTS = {"apes": "apes", "audio": "sc09", "pretrain": "pretrain"}
_OVERRIDE = re.compile(r"^(~|\+\+|\+)?([\w.]+)(=.*)?$", re.S)


def rename_moved(override: str) -> str:
    """A Hydra override with a key of ``MOVED`` -> the same override on the new key (FutureWarning)."""
    m = _OVERRIDE.match(override)
    if m is None or m.group(2) not in MOVED:
        return override
    new = MOVED[m.group(2)]
    warnings.warn(f"{m.group(2)} is now {new}; read {override!r} as {new}{m.group(3) or ''}", FutureWarning,
                  stacklevel=3)
    return f"{m.group(1) or ''}{new}{m.group(3) or ''}"


def _check_experiment(config_name: str, experiment: str | None) -> None:
    """ConfigError when ``experiment`` is another pipeline's (``experiment=sc09`` for apes would merge the
    audio keys into the apes config); experiments belong to a pipeline by name (``EXPERIMENTS``)."""
    prefix = EXPERIMENTS.get(config_name)
    if experiment is None or prefix is None or experiment.startswith(prefix):
        return
    owner = next((c for c, p in EXPERIMENTS.items() if experiment.startswith(p)), None)
    own = [e for e in group_options("experiment") if e.startswith(prefix)]
    where = f"belongs to the {owner} pipeline (mambaseq {owner} run experiment={experiment})" if owner else \
        f"is not an experiment of the {config_name} pipeline"
    raise ConfigError(f"experiment={experiment} {where}; {config_name} experiments: {', '.join(own)}")


def load_config(config_name: str, overrides: Sequence[str] = (), settings: Mapping[str, str] | None = None
                ) -> Config:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides -> plain nested dict, with ``SETTINGS``,
    ``settings`` and the ``train`` group (as a TrainConfig) checked by name (ConfigError) before anything
    runs. A top-level ``threads`` > 0 sets torch's CPU threads."""
    overrides = [rename_moved(o) for o in overrides]
    _check_experiment(config_name, group_choices(overrides).get("experiment"))
    cfg = compose(config_name, overrides)
    check_settings(cfg, {**SETTINGS, **(settings or {})})
    TrainConfig.from_dict(cfg["train"])
    if cfg.get("threads"):  # CPU threads; on a machine shared with other jobs, threads=1 avoids OpenMP spinning
        torch.set_num_threads(int(cfg["threads"]))
    return cfg


def batch_size(cfg: Config, seq_len: int) -> int:
    """Windows per step at context ``seq_len``: ``data.tokens_per_step // seq_len`` when set (the same
    tokens per step at every context length), else ``train.batch_size``."""
    tps = cfg["data"].get("tokens_per_step")
    return max(1, int(tps) // seq_len) if tps else int(cfg["train"]["batch_size"])


def train_config(cfg: Config, seq_len: int, world_size: int = 1, local_rank: int = 0) -> TrainConfig:
    """The ``train`` group at context ``seq_len`` with the run's seed and ``batch_size``; under data
    parallelism the batch is the global one, split evenly over ``world_size`` processes (one GPU each)."""
    batch = batch_size(cfg, seq_len)
    if batch % world_size:
        raise ValueError(f"train.batch_size={batch} (the global batch) must be divisible by the number of "
                         f"processes ({world_size})")
    t = {**cfg["train"], "seq_len": seq_len, "seed": int(cfg["seed"]), "batch_size": batch // world_size}
    if world_size > 1 and torch.cuda.is_available() and t.get("device", "auto") == "auto":
        t["device"] = f"cuda:{local_rank}"
    return TrainConfig.from_dict(t)


# --- run folders ------------------------------------------------------------------------------------------
def run_dir(cfg: Config, *parts: str) -> Path:
    """``<out_dir>/<part>_<part>_...``: one folder per run (data, model, context length, ...)."""
    return Path(cfg["out_dir"]) / "_".join(parts)


def require_checkpoint(run: Path, command: str) -> Path:
    """The run's latest complete checkpoint; FileNotFoundError saying which command makes one."""
    ckpt = resumable_checkpoint(run)  # CorruptFileError when every checkpoint is damaged
    if ckpt is None:
        raise FileNotFoundError(f"{run}: no checkpoint yet; run `mambaseq {command} train` first")
    return ckpt


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- models -----------------------------------------------------------------------------------------------
# The one place where a config group becomes a model and a checkpoint folder a model; built on today's
# public constructors (MambaConfig, the heads, SaShiMiConfig/SaShiMiLM, load_pretrained) so that the
# library's architecture registry replaces this section in one spot.
HEADS: dict[str, type[nn.Module]] = {"lm": MambaLMHeadModel, "mlm": MambaForMaskedLM,
                                     "classifier": MambaForSequenceClassification}
PRETRAINED_LMS = ("MambaLMHeadModel", "MambaForMaskedLM")  # checkpoints a classifier can start from


def model_config(spec: Mapping[str, Any], **fixed: Any) -> MambaConfig | SaShiMiConfig:
    """The typed config of a Hydra model group: ``{"size": name, **MambaConfig fields}`` (a named size,
    ``MambaConfig.from_name``), or ``{"backbone": "mamba" | "sashimi", **fields}`` (audio). ``fixed``
    fields come from the data (vocab_size, num_labels)."""
    m = dict(spec)
    backbone = m.pop("backbone", "mamba")
    if backbone == "sashimi":
        return SaShiMiConfig(**m, **fixed)
    if backbone != "mamba":
        raise ValueError(f"audio_model.backbone must be 'sashimi' or 'mamba', got {backbone!r}")
    size = m.pop("size", None)
    return MambaConfig.from_name(size, **m, **fixed) if size else MambaConfig(**m, **fixed)


def build_model(spec: Mapping[str, Any], head: str = "lm", device: str | None = None, **fixed: Any) -> nn.Module:
    """A fresh model from a Hydra model group (``model_config``): ``head`` lm | mlm | classifier for Mamba
    backbones (a SaShiMi backbone is always an LM). ``device="meta"`` only checks the configuration."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}")
    if head != "classifier":  # pooling is the classifier's; an LM's config.json stays free of it
        spec = {k: v for k, v in spec.items() if k != "pooling"}
    cfg = model_config(spec, **fixed)
    cls = SaShiMiLM if isinstance(cfg, SaShiMiConfig) else HEADS[head]
    with torch.device(device) if device else contextlib.nullcontext():
        return cls(cfg)


def load_model(directory: str | Path, map_location: str = "cpu") -> nn.Module:
    """A checkpoint folder as the architecture its config.json records (``mambaseq.model.load_pretrained``:
    every registered architecture, SaShiMiLM included)."""
    return load_pretrained(directory, map_location)


def classifier_from_lm(lm_dir: str | Path, num_labels: int, weights: bool = True, **fields: Any
                       ) -> MambaForSequenceClassification:
    """A sequence classifier with the architecture of a pretrained LM checkpoint (MambaLMHeadModel or
    MambaForMaskedLM) and a fresh head: its backbone weights too (``weights``: fine-tuning) or a fresh
    backbone (the from-scratch comparison). ``fields`` set classifier options (pooling, classifier_norm)."""
    lm_cfg, meta = MambaConfig.load(Path(lm_dir) / CONFIG_NAME)
    if meta.get("architecture") not in PRETRAINED_LMS:
        raise ValueError(f"{lm_dir}: expected a {' or '.join(PRETRAINED_LMS)} checkpoint, got "
                         f"{meta.get('architecture')!r}")
    if weights:
        return MambaForSequenceClassification.from_pretrained(lm_dir, num_labels=num_labels, **fields)
    return MambaForSequenceClassification(lm_cfg.updated(num_labels=num_labels, **fields))


# --- command line -----------------------------------------------------------------------------------------
Action = Callable[[Config, argparse.Namespace], Any]


@dataclass(frozen=True)
class Command:
    """``mambaseq <name> <action> [hydra overrides ...] [--config-name NAME] [--resume]`` (the options may
    come before, between or after the overrides).

    ``help`` is the one line ``mambaseq -h`` shows; ``doc`` the pipeline's module docstring (its first
    paragraph describes the command); ``actions`` maps each action to ``fn(cfg, args)``; ``show-config``
    (print the composed config) is added. ``session`` wraps every action (e.g.
    ``mambaseq.training.distributed.session``)."""

    name: str
    help: str
    doc: str
    load_config: Callable[[Sequence[str], str], Config]
    actions: Mapping[str, Action]
    example: str = "model=small data.seq_len=4096"
    session: Callable[[], ContextManager[Any]] = field(default=contextlib.nullcontext)

    @property
    def description(self) -> str:
        return self.doc.split("\n\n")[0]

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("action", choices=[*self.actions, "show-config"])
        p.add_argument("overrides", nargs="*", help=f"Hydra overrides, e.g. {self.example}; threads=N sets the CPU "
                                                     f"threads (threads=1 on a machine shared with other jobs); "
                                                     f"show-config lists every setting")
        p.add_argument("--config-name", default=self.name, help="primary config in mambaseq.configs")
        p.add_argument("--resume", action="store_true", help="continue each run from its latest checkpoint")

    def add_to(self, subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
        """``mambaseq <name> ...`` as a sub-command of ``mambaseq.cli``."""
        p = subparsers.add_parser(self.name, help=f"{self.help} ({'/'.join(self.actions)})",
                                  description=self.description)
        self.add_arguments(p)
        p.set_defaults(func=self.run)
        return p

    def run(self, args: argparse.Namespace) -> int:
        cfg = self.load_config(args.overrides, args.config_name)
        if args.action == "show-config":
            import yaml

            print(yaml.safe_dump(cfg, sort_keys=False))
            return 0
        with self.session():
            self.actions[args.action](cfg, args)
        return 0

    def main(self, argv: Sequence[str] | None = None) -> int:
        """``python -m mambaseq.pipelines.<name> ...`` (options may follow the overrides)."""
        p = argparse.ArgumentParser(prog=f"python -m mambaseq.pipelines.{self.name}", description=self.description)
        self.add_arguments(p)
        return self.run(p.parse_intermixed_args(argv))
