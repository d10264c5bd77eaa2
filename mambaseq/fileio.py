"""Small files written atomically: a temporary file in the same folder, then a rename, so a reader
never sees a half-written result (an interrupted run leaves the previous file or none)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` (parents created) via a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(obj: Any, path: str | os.PathLike, indent: int = 2) -> Path:
    """JSON (numpy scalars written as floats) written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=float) + "\n")
