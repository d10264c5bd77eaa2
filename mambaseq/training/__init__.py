"""Shared training machinery (DNA, audio and pretraining pipelines): see ``trainer.train``."""

from .checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, resumable_checkpoint, save_checkpoint
from .logger import MetricsLogger, read_metrics
from .losses import classification_loss, lm_loss
from .mlm import MaskedBatches, mask_tokens, mlm_loss
from .optim import SeqLenSchedule, build_optimizer, build_scheduler, param_groups, warmup_cosine
from .trainer import TrainConfig, TrainResult, autocast_context, resolve_device, train

__all__ = [
    "TrainConfig", "TrainResult", "train", "autocast_context", "resolve_device",
    "SeqLenSchedule", "build_optimizer", "build_scheduler", "param_groups", "warmup_cosine",
    "save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints", "resumable_checkpoint",
    "MetricsLogger", "read_metrics", "classification_loss", "lm_loss", "MaskedBatches", "mask_tokens", "mlm_loss",
]
