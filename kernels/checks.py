"""Argument checks shared by the public ops: one error type (ValueError) with a message that names the
argument, what was expected and what was given."""

from __future__ import annotations

from typing import Any

from torch import Tensor


def check(cond: bool, msg: str) -> None:
    """Raise ValueError(msg) unless ``cond``."""
    if not cond:
        raise ValueError(msg)


def shape_of(x: Any) -> str:
    """A tensor's shape as a tuple string, else the type's name (for messages)."""
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__
