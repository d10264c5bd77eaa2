"""Files written atomically (a temporary file in the same folder, then a rename, so a reader never sees a
half-written result: an interrupted run leaves the previous file or none), and files read back with errors
that name the file: a damaged JSON or safetensors file raises `CorruptFileError` with its path, and
`load_weights` validates every tensor before it copies any into a model.

Every write of the project that must not be seen half-done goes through ``atomic_path`` (one file, any
writer: ``np.save``, ``savefig``, ``soundfile``, safetensors) or ``atomic_dir`` (a whole folder: token
stores, the digit set, training checkpoints)::

    with atomic_path("runs/x/plot.png") as tmp:   # tmp keeps the suffix, so writers pick the format
        fig.savefig(tmp)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch


class CorruptFileError(ValueError):
    """A file that exists but cannot be read as what it should be (truncated, corrupt, empty); the message
    starts with its path."""


def _umask() -> int:
    """The process umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file path beside ``path`` (parents created; same suffix, so writers that go by the
    extension pick the right format). When the block ends normally the file is renamed onto ``path``
    (``os.replace``: readers see the old file or the new one) with the mode an ordinary ``open`` gives
    (0o666 less the umask, usually 0o644; ``mkstemp`` alone would leave it private, 0o600); on an exception
    it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # after the writer: some writers replace the file they are given
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, prefix: str | None = None) -> Iterator[Path]:
    """A fresh temporary folder beside ``path``; when the block ends normally it takes the place of
    ``path`` (an old ``path`` is renamed aside first and deleted after, so ``path`` is never half-written),
    with an ordinary folder's mode (0o777 less the umask); on an exception it is deleted and ``path`` is
    left as it was. ``prefix`` names the temporary folders
    (default ``.<name>.tmp-``; a caller that sweeps up after killed runs globs for it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = prefix or f".{path.name}.tmp-"
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
        if not path.exists():
            os.rename(tmp, path)
            return
        trash = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{prefix}old-"))
        os.rename(path, trash / path.name)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.rename(trash / path.name, path)  # put the old one back
            raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str, newline: str | None = None) -> Path:
    """Write ``text`` to ``path`` (parents created) via ``atomic_path``."""
    with atomic_path(path) as tmp, open(tmp, "w", newline=newline) as f:
        f.write(text)
    return Path(path)


def write_json(obj: Any, path: str | os.PathLike, indent: int = 2) -> Path:
    """JSON (numpy scalars written as floats) written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=float) + "\n")


def missing_config(path: str | os.PathLike) -> FileNotFoundError:
    """The error for a checkpoint folder without ``config.json`` (``path`` is the file). A path that does not
    exist and reads like a Hugging Face Hub id (``org/name``) gets a hint: nothing is downloaded at run time."""
    p = Path(path)
    hint = ""
    if not p.parent.exists() and len(p.parent.parts) == 2 and not p.parent.is_absolute():
        hint = (f"; mambaseq loads local folders only and does not download from the Hugging Face Hub: fetch it "
                f"first (e.g. `huggingface-cli download {p.parent.as_posix()} --local-dir <folder>`) and pass the folder")
    return FileNotFoundError(f"{p}: no config.json (expected a save_pretrained directory){hint}")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; FileNotFoundError or CorruptFileError naming ``path``."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path}: corrupt or truncated JSON ({e})") from None


def check_safetensors(path: str | os.PathLike) -> None:
    """Cheap integrity check (header only, no tensor is read): the header parses and its tensors cover the
    file exactly. FileNotFoundError or CorruptFileError naming ``path``."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing weights file")
    try:
        with safe_open(str(path), "pt"):
            pass
    except (SafetensorError, OSError) as e:
        raise CorruptFileError(f"{path}: corrupt or truncated safetensors file ({path.stat().st_size} bytes): "
                               f"{e}") from None


def read_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, "torch.Tensor"]:
    """All tensors of a safetensors file -> {name: tensor on ``device``}; errors name ``path``."""
    from safetensors.torch import load_file

    check_safetensors(path)
    return load_file(str(path), device=device)


def fitting_weights(model: "torch.nn.Module", path: str | os.PathLike, strict: bool = True, device: str = "cpu"
                    ) -> tuple[dict[str, "torch.Tensor"], list[str], list[str]]:
    """Read a safetensors file and check it against ``model`` without changing the model ->
    (tensors to load, missing names, unexpected names).

    Tied parameters (one tensor under several names, saved once) count as present when any of their names
    is in the file. Raises FileNotFoundError / CorruptFileError naming ``path`` for a missing or damaged
    file, CorruptFileError for a shape mismatch or (``strict``) missing/unexpected tensors.
    """
    tensors = read_safetensors(path, device)
    own = model.state_dict()
    aliases: dict[tuple[int, tuple[int, ...]], set[str]] = {}
    for k, v in own.items():
        aliases.setdefault((v.data_ptr(), tuple(v.shape)), set()).add(k)
    missing = [k for k, v in own.items() if not aliases[(v.data_ptr(), tuple(v.shape))] & tensors.keys()]
    unexpected = [k for k in tensors if k not in own]
    wrong = [f"{k}: {tuple(tensors[k].shape)} in the file, {tuple(own[k].shape)} in the model"
             for k in tensors if k in own and tensors[k].shape != own[k].shape]
    if wrong or (strict and (missing or unexpected)):
        parts = [f"shape mismatch {wrong[:3]}"] * bool(wrong) + [f"missing {missing[:5]}"] * bool(strict and missing) \
            + [f"unexpected {unexpected[:5]}"] * bool(strict and unexpected)
        raise CorruptFileError(f"{Path(path)}: weights do not fit {type(model).__name__}: {'; '.join(parts)}")
    return {k: v for k, v in tensors.items() if k in own}, missing, unexpected


def load_weights(model: "torch.nn.Module", path: str | os.PathLike, strict: bool = True, device: str = "cpu"
                 ) -> tuple[list[str], list[str]]:
    """``safetensors.torch.load_model`` that leaves ``model`` untouched on failure: the whole file is read
    and checked by ``fitting_weights`` before any tensor is copied. Returns (missing, unexpected) names."""
    tensors, missing, unexpected = fitting_weights(model, path, strict, device)
    model.load_state_dict(tensors, strict=False)
    return missing, unexpected
