"""AdamW parameter groups, warmup + cosine learning rate, and sequence-length warmup."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """AdamW groups: decayed matrices, and the undecayed rest; per learning-rate scale.

    No decay on parameters flagged ``_no_weight_decay`` (the SSM's A, D and dt bias), on biases and on
    norm weights (every parameter with fewer than 2 dims). Parameters flagged ``_lr_scale = s`` (e.g. the wide
    head, ``model.KmerProfileHead``) form groups of their own with ``lr = lr * s`` (given ``lr``); without
    such flags there are exactly the two groups. Tied parameters are listed once.
    """
    groups: dict[tuple[bool, float], list] = {(True, 1.0): [], (False, 1.0): []}
    seen: set[int] = set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        decay = not (getattr(p, "_no_weight_decay", False) or p.ndim < 2)
        groups.setdefault((decay, float(getattr(p, "_lr_scale", 1.0))), []).append(p)
    out = []
    for (decay, scale), params in groups.items():
        g = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if scale != 1.0:
            if lr is None:
                raise ValueError("param_groups: parameters with an _lr_scale need the base lr")
            g["lr"] = lr * scale
        out.append(g)
    return out


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1,
                    betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW over ``param_groups`` (fused on CUDA when every parameter is on a CUDA device)."""
    groups = param_groups(model, weight_decay, lr)
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=on_cuda or None)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """LR multiplier: linear 0 -> 1 over ``warmup_steps``, then cosine 1 -> ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    t = min((step - warmup_steps) / span, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def build_scheduler(opt: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    min_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, warmup_steps, total_steps, min_ratio))


@dataclass(frozen=True)
class SeqLenSchedule:
    """Sequence-length warmup at constant tokens per step (the Mamba paper's DNA recipe).

    Stage k (k = 0, 1, ...) uses length ``min_len * 2**k`` and batch ``batch_size * target_len / length``
    for ``stage_steps`` steps, until the target length, which runs for the remaining steps. With
    ``stage_steps = 0`` (or min_len >= target_len) every step uses the target.
    """

    target_len: int
    batch_size: int
    min_len: int = 1024
    stage_steps: int = 0

    def __post_init__(self) -> None:
        if self.target_len < 1 or self.batch_size < 1:
            raise ValueError(f"need target_len, batch_size >= 1, got {self.target_len}, {self.batch_size}")

    def stages(self) -> list[tuple[int, int]]:
        """[(length, batch)] of the warmup stages, then the target."""
        out = []
        if self.stage_steps > 0:
            length = self.min_len
            while length < self.target_len:
                out.append((length, max(self.batch_size * self.target_len // length, 1)))
                length *= 2
        return out + [(self.target_len, self.batch_size)]

    def at(self, step: int) -> tuple[int, int]:
        """(seq_len, batch_size) for a 0-based training step."""
        stages = self.stages()
        k = min(step // self.stage_steps, len(stages) - 1) if self.stage_steps > 0 else len(stages) - 1
        return stages[k]
