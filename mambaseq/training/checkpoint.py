"""Training checkpoints: model (config.json + model.safetensors) + trainer state, written atomically.

    run_dir/checkpoints/step_00000100/
        config.json, model.safetensors    model.save_pretrained (self-describing, loadable on its own)
        trainer_state.pt                  optimizer, scheduler, RNG states, step, data position, extra
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

STATE_NAME = "trainer_state.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may touch (python, numpy, torch CPU and CUDA)."""
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _save_model(model: nn.Module, d: Path) -> None:
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(d)
    else:  # any nn.Module: weights only (safetensors), shared tensors handled by save_model
        from safetensors.torch import save_model
        save_model(model, str(d / "model.safetensors"))


def _load_model(model: nn.Module, d: Path) -> None:
    from safetensors.torch import load_model
    device = next(model.parameters()).device
    load_model(model, str(d / "model.safetensors"), strict=True, device=str(device))


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any | None = None, extra: dict[str, Any] | None = None,
                    keep_last: int = 2) -> Path:
    """Write ``run_dir/checkpoints/step_XXXXXXXX`` atomically (temp dir, then rename); keep the last
    ``keep_last`` checkpoints. ``step`` is the number of optimizer steps done (the resume point)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        _save_model(model, tmp)
        state = {"step": step, "optimizer": optimizer.state_dict(), "rng": rng_state(),
                 "scheduler": scheduler.state_dict() if scheduler is not None else None,
                 "extra": extra or {}}
        torch.save(state, tmp / STATE_NAME)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / STATE_NAME).is_file())


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any | None = None, restore_rng: bool = True) -> dict[str, Any]:
    """Load weights (+ optimizer/scheduler/RNG) in place; returns the state dict (``step``, ``extra``)."""
    path = Path(path)
    if not (path / STATE_NAME).is_file():
        raise FileNotFoundError(f"{path}: not a training checkpoint (no {STATE_NAME})")
    _load_model(model, path)
    state = torch.load(path / STATE_NAME, map_location="cpu", weights_only=False)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return state
