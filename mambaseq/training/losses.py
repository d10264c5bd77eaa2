"""Loss functions in the trainer's ``loss_fn(model, batch) -> (loss, metrics)`` form."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LN2 = 0.6931471805599453


def classification_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    """batch = (input_ids (b, L), labels (b,)); model -> logits (b, n_classes). Metrics: acc."""
    x, y = batch
    logits = model(x).float()
    loss = F.cross_entropy(logits, y)
    acc = (logits.argmax(-1) == y).float().mean()
    return loss, {"acc": float(acc)}


def lm_loss(model: nn.Module, batch: torch.Tensor | tuple[torch.Tensor, ...]):
    """Next-token loss on ids (b, L) (or the first element of a tuple); predicts x[:, 1:] from x[:, :-1].

    Metrics: acc (top-1) and bits per token (loss / ln 2); ``tokens`` counts predicted positions.
    """
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    logits = model(x[:, :-1]).float()
    target = x[:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    acc = (logits.argmax(-1) == target).float().mean()
    return loss, {"acc": float(acc), "bits_per_token": float(loss.detach()) / LN2, "tokens": target.numel()}
