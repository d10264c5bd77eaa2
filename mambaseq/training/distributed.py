"""Data parallelism under ``torchrun`` (DDP): process set-up and teardown, rank-0-first work, losses logged
as global-batch means. One process (no ``WORLD_SIZE``) needs none of it: every helper is then a no-op.

    rank, world, local = dist_info()        # initialises torch.distributed under torchrun
    with rank_zero_first():                  # e.g. rank 0 prepares a data set, the others then reuse it
        store = prepare(...)
    loss_fn = global_mean_loss(lm_loss, world)
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Iterator

import torch

from .trainer import LossFn


def initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


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


@contextlib.contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes a data set); the other ranks run it after, when they find
    its result in place."""
    rank, world, _ = dist_info()
    if world > 1 and rank > 0:
        torch.distributed.barrier()
    yield
    if world > 1 and rank == 0:
        torch.distributed.barrier()


@contextlib.contextmanager
def session() -> Iterator[None]:
    """Around a command: all ranks leave together, then the process group is destroyed. (A gloo rank that
    tears down while its peer is still in a final collective or writing checkpoints was seen to abort,
    "terminate called without an active exception", twice in six full CPU test-suite runs.)"""
    try:
        yield
        if initialized():
            torch.distributed.barrier()
    finally:
        if initialized():
            torch.distributed.destroy_process_group()


def global_mean_loss(base: LossFn, world: int) -> LossFn:
    """``base`` (lm_loss or mlm_loss) whose logged values (loss, acc, bits) are the mean over all ranks, i.e.
    over the global batch; gradients stay local (DDP averages them), so training is unchanged and logs match
    one process."""
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
