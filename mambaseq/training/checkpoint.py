"""Training checkpoints: model (config.json + model.safetensors) + trainer state, written atomically.

    run_dir/checkpoints/step_00000100/
        config.json, model.safetensors    model.save_pretrained (self-describing, loadable on its own)
        trainer_state.pt                  optimizer, scheduler, RNG states, step, data position, extra

Crash safety: a checkpoint is written into a ``.tmp-*`` folder and renamed into place
(``mambaseq.fileio.atomic_dir``), and old ones are renamed away before they are deleted, so a killed run
never leaves a half-written ``step_*`` folder; the ``.tmp-*`` folders it leaves are removed by the next
save. A checkpoint damaged afterwards (a disk or copy
fault) is skipped by ``latest_checkpoint`` with a warning naming the file, so resume and evaluation fall
back to the newest complete one; ``load_checkpoint`` reads and checks everything before it changes the
model or optimizer.
"""

from __future__ import annotations

import os
import random
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mambaseq.config import CONFIG_NAME, WEIGHTS_NAME
from mambaseq.fileio import CorruptFileError, atomic_dir, check_safetensors, fitting_weights, read_json

STATE_NAME = "trainer_state.pt"
TMP_PREFIX = ".tmp-"


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped in favour of an older complete one."""


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


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any | None = None, extra: dict[str, Any] | None = None,
                    keep_last: int = 2) -> Path:
    """Write ``run_dir/checkpoints/step_XXXXXXXX`` atomically (temp dir, then rename); keep the last
    ``keep_last`` checkpoints. ``step`` is the number of optimizer steps done (the resume point)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f"{TMP_PREFIX}*"):  # left by a save or a pruning that was killed
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step_{step:08d}"
    with atomic_dir(final, prefix=TMP_PREFIX) as tmp:
        _save_model(model, tmp)
        state = {"step": step, "optimizer": optimizer.state_dict(), "rng": rng_state(),
                 "scheduler": scheduler.state_dict() if scheduler is not None else None,
                 "extra": extra or {}}
        torch.save(state, tmp / STATE_NAME)
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            gone = root / f"{TMP_PREFIX}old-{old.name}"
            os.rename(old, gone)  # out of the listing at once; a kill during rmtree leaves only a .tmp- folder
            shutil.rmtree(gone, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run that hold a trainer state, oldest first (see ``check_checkpoint``)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / STATE_NAME).is_file())


def check_checkpoint(path: str | Path) -> None:
    """Cheap integrity check of a checkpoint folder (headers and directories only, no tensor is read):
    trainer_state.pt is a complete zip archive, model.safetensors' header covers the file, config.json (if
    any) parses. Raises FileNotFoundError or CorruptFileError naming the damaged file."""
    path = Path(path)
    state = path / STATE_NAME
    if not state.is_file():
        raise FileNotFoundError(f"{path}: not a training checkpoint (no {STATE_NAME})")
    try:
        with zipfile.ZipFile(state) as z:  # torch.save's format; the central directory is written last
            z.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise CorruptFileError(f"{state}: corrupt or truncated trainer state ({e})") from None
    check_safetensors(path / WEIGHTS_NAME)
    if (path / CONFIG_NAME).exists():
        read_json(path / CONFIG_NAME)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint that passes ``check_checkpoint`` (None if there is none). Each damaged newer
    one is skipped with a ``CheckpointWarning`` naming the damaged file and the checkpoint used instead."""
    skipped: list[str] = []
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            check_checkpoint(ckpt)
        except (CorruptFileError, FileNotFoundError) as e:
            skipped.append(str(e))
            continue
        for why in skipped:
            warnings.warn(f"skipping damaged checkpoint: {why}; using {ckpt}", CheckpointWarning, stacklevel=2)
        return ckpt
    for why in skipped:
        warnings.warn(f"skipping damaged checkpoint: {why}; no complete checkpoint left", CheckpointWarning,
                      stacklevel=2)
    return None


def resumable_checkpoint(run_dir: str | Path) -> Path | None:
    """``latest_checkpoint``, except that a run whose checkpoints are all damaged is an error, not a fresh start:
    CorruptFileError naming the folder and the checkpoints (the warnings name the damaged files). None only when
    there is no checkpoint at all."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None and list_checkpoints(run_dir):
        names = ", ".join(p.name for p in list_checkpoints(run_dir))
        raise CorruptFileError(f"{Path(run_dir) / 'checkpoints'}: none is complete: every checkpoint is damaged "
                               f"({names}; the warnings above name the files); nothing was changed. Repair or "
                               f"remove them, or train afresh (without --resume)")
    return ckpt


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any | None = None, restore_rng: bool = True) -> dict[str, Any]:
    """Load weights (+ optimizer/scheduler/RNG) in place; returns the state dict (``step``, ``extra``).

    Every file is read and checked before anything is changed, so a damaged checkpoint raises
    (FileNotFoundError / CorruptFileError naming the file, ValueError for an optimizer that does not fit)
    and leaves ``model`` and ``optimizer`` as they were."""
    path = Path(path)
    check_checkpoint(path)
    try:
        state = torch.load(path / STATE_NAME, map_location="cpu", weights_only=False)
    except Exception as e:  # unpickling damaged bytes can raise almost anything
        raise CorruptFileError(f"{path / STATE_NAME}: unreadable trainer state ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not {"step", "optimizer", "rng"} <= state.keys():
        raise CorruptFileError(f"{path / STATE_NAME}: not a trainer state (needs step, optimizer, rng)")
    weights, _, _ = fitting_weights(model, path / WEIGHTS_NAME, device=str(next(model.parameters()).device))
    if optimizer is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])  # checks group sizes before it changes anything
        except ValueError as e:
            raise ValueError(f"{path / STATE_NAME}: the optimizer's parameter groups do not fit this checkpoint "
                             f"({e}); a setting that groups parameters (model.wide_lr_scale, or the model "
                             f"itself) differs from the run's: resume with the run's settings, or start a new "
                             f"run in another directory") from None
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    model.load_state_dict(weights, strict=False)  # names and shapes checked by fitting_weights
    if restore_rng:
        set_rng_state(state["rng"])
    return state
