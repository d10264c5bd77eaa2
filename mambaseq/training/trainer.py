"""A generic training loop: model + loss function + step-indexed batches.

The loop knows nothing about DNA or audio. A pipeline supplies

* ``batch_fn(step, seq_len, batch_size) -> batch``: a pure function of its arguments (e.g. seeded by
  step), so the data position is just the step and resuming replays exactly the same batches;
* ``loss_fn(model, batch) -> (loss, metrics)``: scalar loss plus floats to log (e.g. ``acc``;
  ``tokens`` if the token count differs from seq_len * batch_size);
* optionally ``eval_fn(model, step) -> metrics``.

It adds AdamW (no decay on ``_no_weight_decay``/norm/bias), warmup + cosine, sequence-length warmup at
constant tokens per step, micro-batching, bf16 autocast on CUDA, gradient clipping, tqdm progress,
CSV/TensorBoard metrics, atomic checkpoints every N steps and exact resume. A long run can be cut into
commands of a fixed number of steps (``steps_per_call``; each ends with a checkpoint, ``resume=True``
continues) that print the ETA of the call and of the whole run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn
from tqdm import tqdm

from mambaseq.config import CONFIG_NAME
from mambaseq.fileio import read_json

from .checkpoint import load_checkpoint, resumable_checkpoint, save_checkpoint
from .logger import MetricsLogger
from .optim import SeqLenSchedule, build_optimizer, build_scheduler

log = logging.getLogger(__name__)

BatchFn = Callable[[int, int, int], Any]
LossFn = Callable[[nn.Module, Any], "tuple[torch.Tensor, Mapping[str, float]]"]
EvalFn = Callable[[nn.Module, int], Mapping[str, float]]


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings (Hydra's ``train:`` group maps onto this)."""

    max_steps: int = 1000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seq_len: int = 1024             # target length
    batch_size: int = 8             # at the target length
    seq_len_warmup: bool = False    # 2^10 doubling to seq_len, batch halving (constant tokens/step)
    seq_len_min: int = 1024
    seq_len_stage_steps: int = 0    # steps per warmup stage (0: default max_steps // (2 * n_stages))
    max_tokens_per_micro: int = 0   # split a step into micro-batches of at most this many tokens (0: never)
    precision: str = "auto"         # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0             # 0: only at the end
    ckpt_every: int = 0             # 0: only at the end
    keep_last: int = 2
    max_time_s: float = 0.0         # stop early (with a checkpoint) after this wall time; 0 = no limit
    steps_per_call: int = 0         # > 0: one call trains at most this many steps, checkpoints, and stops
                                    #   (resume=True continues: a long run as several bounded commands)
    tensorboard: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        """Every field checked by name (``train.<field>``) before any training work starts."""
        from mambaseq.settings import ConfigError, check_settings

        self.betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else self.betas
        check_settings({"train": dataclasses.asdict(self)}, {f"train.{k}": r for k, r in _TRAIN_RULES.items()})
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"train.betas={list(self.betas)!r}: must be two numbers in [0, 1)")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"train.precision={self.precision!r}: must be auto, bf16 or fp32")
        if not isinstance(self.device, str):
            raise ConfigError(f"train.device={self.device!r}: must be a device name such as auto, cpu, cuda:0")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        from mambaseq.settings import ConfigError

        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"train: unknown train settings {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    def seq_schedule(self) -> SeqLenSchedule:
        stage_steps = 0
        if self.seq_len_warmup and self.seq_len > self.seq_len_min:
            n_stages = int(math.log2(self.seq_len // self.seq_len_min)) + 1
            stage_steps = self.seq_len_stage_steps or max(self.max_steps // (2 * n_stages), 1)
        return SeqLenSchedule(self.seq_len, self.batch_size, self.seq_len_min, stage_steps)


_TRAIN_RULES = {
    "max_steps": "int>=1", "lr": "float>0", "min_lr_ratio": "float>=0", "warmup_steps": "int>=0",
    "weight_decay": "float>=0", "grad_clip": "float>=0", "seq_len": "int>=1", "batch_size": "int>=1",
    "seq_len_warmup": "bool", "seq_len_min": "int>=1", "seq_len_stage_steps": "int>=0",
    "max_tokens_per_micro": "int>=0", "seed": "int>=0", "log_every": "int>=1", "eval_every": "int>=0",
    "ckpt_every": "int>=0", "keep_last": "int>=0", "max_time_s": "float>=0", "steps_per_call": "int>=0",
    "tensorboard": "bool", "progress": "bool",
}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on CUDA (auto/bf16); fp32 elsewhere (CPU bf16 matmuls are slow on this class of CPU)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto|bf16|fp32, got {precision!r}")
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def split_batch(batch: Any, n: int) -> list[Any]:
    """Split every tensor of a batch along dim 0 into n near-equal micro-batches."""
    if n == 1:
        return [batch]
    if isinstance(batch, torch.Tensor):
        return list(batch.tensor_split(n))
    if isinstance(batch, (list, tuple)):
        parts = [split_batch(b, n) for b in batch]
        return [type(batch)(p[i] for p in parts) for i in range(n)]
    if isinstance(batch, dict):
        parts = {k: split_batch(v, n) for k, v in batch.items()}
        return [{k: parts[k][i] for k in batch} for i in range(n)]
    return [batch] * n


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``: KiB on Linux, bytes on macOS), GiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**30 if sys.platform == "darwin" else rss / 2**20


@dataclass
class TrainResult:
    step: int
    metrics: dict[str, float] = field(default_factory=dict)   # last logged train window + last eval
    tokens_per_s: float = 0.0
    peak_memory_gib: float | None = None   # GPU: torch.cuda.max_memory_allocated during training; None on CPU
    peak_rss_gib: float | None = None      # host: the process's peak resident memory (data loading included)
    wall_s: float = 0.0
    stopped_early: bool = False   # before max_steps: max_time_s, or the end of this call (steps_per_call)
    max_steps: int = 0            # the whole run's step budget (``step < max_steps``: resume to continue)
    steps_run: int = 0            # steps trained by this call (0: a resumed run that had already finished)

    def summary(self) -> dict[str, Any]:
        """How the run went, for a run's train_summary.json (without the metrics)."""
        return {"step": self.step, "max_steps": self.max_steps, "tokens_per_s": self.tokens_per_s,
                "peak_memory_gib": self.peak_memory_gib, "peak_rss_gib": self.peak_rss_gib, "wall_s": self.wall_s,
                "stopped_early": self.stopped_early}


def _duration(seconds: float) -> str:
    """Seconds as ``1h02m``, ``3m05s`` or ``42s``."""
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


SCHEDULE_FIELDS = ("max_steps", "lr", "min_lr_ratio", "warmup_steps", "batch_size", "seq_len_warmup", "seq_len_min",
                   "seq_len_stage_steps")


def schedule_changes(saved: Mapping[str, Any] | None, cfg: "TrainConfig") -> str:
    """'train.max_steps 400 -> 800, ...' for the fields of ``SCHEDULE_FIELDS`` that differ between a checkpoint's
    saved train config and ``cfg``; '' when they agree or the checkpoint saved none."""
    if not isinstance(saved, Mapping):
        return ""
    now = dataclasses.asdict(cfg)
    return ", ".join(f"train.{k} {saved[k]!r} -> {now[k]!r}" for k in SCHEDULE_FIELDS
                     if k in saved and k in now and saved[k] != now[k])


def model_changes(ckpt: Path, model: nn.Module) -> str:
    """'d_state 16 -> 8, ...' for the config fields in which ``model.cfg`` differs from the checkpoint's
    config.json; '' when they agree, or when either side has no config to compare."""
    cfg = getattr(model, "cfg", None)
    path = Path(ckpt) / CONFIG_NAME
    if cfg is None or not hasattr(cfg, "to_dict") or not path.is_file():
        return ""
    saved, now = read_json(path), json.loads(json.dumps(cfg.to_dict()))  # tuples as lists, as the file has them
    return ", ".join(f"{k} {saved[k]!r} -> {now[k]!r}" for k in now if k in saved and saved[k] != now[k])


def progress_line(step: int, start: int, stop: int, max_steps: int, elapsed_s: float) -> str:
    """``step 300/1500 (this call 300/500), 1.21 steps/s, ETA call 2m45s, run 16m31s``: the ETAs at this
    call's mean rate (steps done since ``start`` over ``elapsed_s`` seconds; compilation included, so early
    estimates run long). ``stop``: the step this call ends at; ``max_steps``: the whole run's."""
    rate = (step - start) / max(elapsed_s, 1e-9)
    eta = lambda n: _duration(n / rate) if rate > 0 else "n/a"  # noqa: E731
    line = f"step {step}/{max_steps}"
    if stop < max_steps:
        line += f" (this call {step - start}/{stop - start}), {rate:.3g} steps/s, ETA call {eta(stop - step)}, " \
                f"run {eta(max_steps - step)}"
    else:
        line += f", {rate:.3g} steps/s, ETA {eta(max_steps - step)}"
    return line


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def train(model: nn.Module, loss_fn: LossFn, batch_fn: BatchFn, cfg: TrainConfig, run_dir: str | Path,
          eval_fn: EvalFn | None = None, resume: bool = False, extra_state: Mapping[str, Any] | None = None
          ) -> TrainResult:
    """Train ``model`` for ``cfg.max_steps`` optimizer steps, writing logs and checkpoints to ``run_dir``.

    ``resume=True`` continues from the latest checkpoint in ``run_dir`` (if any) and yields the same
    losses and weights as an uninterrupted run. With ``cfg.steps_per_call`` > 0 a call stops (checkpointed,
    evaluated) after that many steps, so a run of ``max_steps`` takes ceil(max_steps / steps_per_call) calls
    with ``resume=True``; every log step prints ``progress_line`` (step, rate, ETA of the call and the run)
    when the progress bar is off. Returns the final metrics and throughput.
    """
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    is_main = not dist or torch.distributed.get_rank() == 0
    model.to(device)
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas)
    sched = build_scheduler(opt, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    start = 0
    ckpt = resumable_checkpoint(run_dir) if resume else None  # all damaged: an error, nothing deleted
    if ckpt is not None:
        base_lrs = [g["initial_lr"] for g in opt.param_groups]  # this run's lr x each group's scale
        state = load_checkpoint(ckpt, model, opt, sched)
        start = int(state["step"])
        # the loaded optimizer and scheduler carry the checkpoint run's base learning rates: the schedule is this
        # run's (train.lr, model.wide_lr_scale, warmup, max_steps), recomputed at the resumed step
        sched.base_lrs = base_lrs
        for g, lr0, lam in zip(opt.param_groups, base_lrs, sched.lr_lambdas):
            g["initial_lr"] = lr0
            g["lr"] = lr0 * lam(sched.last_epoch)
        if is_main:
            print(f"resumed from {ckpt} at step {start}")
            differs = model_changes(ckpt, _unwrap(model))
            if differs:
                print(f"WARNING: the model asked for differs from the checkpoint's ({differs}); its weights fit, so "
                      f"training continues with the new settings. A run folder holds one model: give a variant "
                      f"its own out_dir", flush=True)
            changed = schedule_changes((state.get("extra") or {}).get("train_config"), cfg)
            if changed:
                print(f"WARNING: resuming with a different schedule than the checkpoint's run ({changed}): the "
                      f"learning-rate schedule and the steps left are recomputed from the new values, so this run "
                      f"is not the one a fresh start with them would give", flush=True)
    else:
        stale = Path(run_dir) / "checkpoints"
        if is_main and stale.is_dir() and any(stale.iterdir()):
            # a fresh run is never evaluated from a previous run's checkpoints (the highest step number wins)
            print(f"starting afresh in {run_dir}: removing the previous run's checkpoints (resume continues them)")
            shutil.rmtree(stale)
        torch.manual_seed(cfg.seed)
    train_model = model
    if dist:
        ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    logger = MetricsLogger(run_dir, cfg.tensorboard, resume_step=start if ckpt else None, enabled=is_main)
    schedule = cfg.seq_schedule()
    state_extra = {"train_config": dataclasses.asdict(cfg), **dict(extra_state or {})}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def checkpoint(step: int) -> None:
        if is_main:
            save_checkpoint(run_dir, step, _unwrap(model), opt, sched,
                            {**state_extra, "data_position": step}, cfg.keep_last)

    window: dict[str, float] = {}
    n_window, tok_window, t_window = 0, 0, time.perf_counter()
    t0, total_tokens, result = time.perf_counter(), 0, TrainResult(step=start)
    stop = min(cfg.max_steps, start + cfg.steps_per_call) if cfg.steps_per_call > 0 else cfg.max_steps
    bar = tqdm(range(start, stop), initial=start, total=stop, desc="train",
               disable=not (cfg.progress and is_main), dynamic_ncols=True)
    step = start
    for step in bar:
        seq_len, batch_size = schedule.at(step)
        batch = batch_fn(step, seq_len, batch_size)
        n_micro = 1
        if cfg.max_tokens_per_micro > 0:
            n_micro = min(batch_size, max(1, math.ceil(seq_len * batch_size / cfg.max_tokens_per_micro)))
        train_model.train()
        opt.zero_grad(set_to_none=True)
        step_metrics: dict[str, float] = {}
        for micro in split_batch(batch, n_micro):
            micro = to_device(micro, device)
            with autocast_context(device, cfg.precision):
                loss, metrics = loss_fn(train_model, micro)
            (loss / n_micro).backward()
            step_metrics["loss"] = step_metrics.get("loss", 0.0) + float(loss.detach()) / n_micro
            for k, v in metrics.items():
                step_metrics[k] = step_metrics.get(k, 0.0) + float(v) / (1 if k == "tokens" else n_micro)
        if cfg.grad_clip > 0:
            step_metrics["grad_norm"] = float(nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        opt.step()
        sched.step()
        tokens = int(step_metrics.pop("tokens", seq_len * batch_size))
        total_tokens += tokens
        tok_window += tokens
        for k, v in step_metrics.items():
            window[k] = window.get(k, 0.0) + v
        n_window += 1
        done = step + 1
        if done % cfg.log_every == 0 or done == stop:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t_window
            avg = {k: v / n_window for k, v in window.items()}
            avg.update(lr=sched.get_last_lr()[0], seq_len=seq_len, batch_size=batch_size,
                       tokens_per_s=tok_window / max(dt, 1e-9))
            logger.log(done, avg, prefix="train/")
            result.metrics.update({f"train/{k}": v for k, v in avg.items()})
            shown = {"loss": "loss (nats)", "acc": "acc"}
            bar.set_postfix({shown[k]: f"{avg[k]:.3g}" for k in shown if k in avg}
                            | {"tok/s": f"{avg['tokens_per_s']:,.0f}", "L": seq_len})
            if is_main and not cfg.progress:  # GPU logs: a plain line with the ETA instead of the bar
                print(f"train {progress_line(done, start, stop, cfg.max_steps, time.perf_counter() - t0)}, "
                      f"loss {avg['loss']:.4g} nats, {avg['tokens_per_s']:,.0f} tok/s", flush=True)
            window, n_window, tok_window, t_window = {}, 0, 0, time.perf_counter()
        if eval_fn is not None and cfg.eval_every > 0 and done % cfg.eval_every == 0 and done < stop:
            _evaluate(eval_fn, model, done, logger, result)
        if cfg.ckpt_every > 0 and done % cfg.ckpt_every == 0 and done < stop:  # the call's end saves its own
            checkpoint(done)
        if cfg.max_time_s > 0 and time.perf_counter() - t0 > cfg.max_time_s and done < cfg.max_steps:
            print(f"stopping early at step {done}: max_time_s={cfg.max_time_s} reached")
            result.stopped_early = True
            break
    bar.close()
    done = step + 1 if stop > start else start
    result.step, result.max_steps = done, cfg.max_steps
    if done < cfg.max_steps and not result.stopped_early:  # the end of this call (steps_per_call)
        result.stopped_early = True
        if is_main:
            wall, left = time.perf_counter() - t0, cfg.max_steps - done
            print(f"end of this call at step {done}/{cfg.max_steps}: {done - start} steps in {_duration(wall)}; "
                  f"{left} steps left, ETA {_duration(left * wall / max(done - start, 1))} at this call's rate in "
                  f"{math.ceil(left / cfg.steps_per_call)} more call(s) of {cfg.steps_per_call} steps (resume: "
                  f"--resume)", flush=True)
    result.wall_s = time.perf_counter() - t0
    result.tokens_per_s = total_tokens / max(result.wall_s, 1e-9)
    result.steps_run = done - start
    if device.type == "cuda":
        result.peak_memory_gib = torch.cuda.max_memory_allocated(device) / 2**30
    result.peak_rss_gib = peak_rss_gib()
    if done > start or ckpt is None:
        checkpoint(done)
    if eval_fn is not None:
        _evaluate(eval_fn, model, done, logger, result)
    logger.close()
    return result


def _evaluate(eval_fn: EvalFn, model: nn.Module, step: int, logger: MetricsLogger, result: TrainResult) -> None:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        metrics = dict(eval_fn(model, step))
    model.train(was_training)
    logger.log(step, metrics, prefix="val/")
    result.metrics.update({f"val/{k}": float(v) for k, v in metrics.items()})
