"""Load mamba-ssm's pure-PyTorch ``selective_scan_ref`` from its PyPI sdist without its CUDA extension.

The module ``mamba_ssm/ops/selective_scan_interface.py`` imports ``selective_scan_cuda`` at top level,
so we parse the file and execute only the reference function's source. Nothing of the peer is vendored:
the sdist is found (or downloaded with pip) at run time.
"""

from __future__ import annotations

import ast
import glob
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "mamba-ssm==2.3.2.post1"


def find_sdist(search: list[str]) -> Path | None:
    for d in search:
        hits = sorted(glob.glob(os.path.join(d, "mamba_ssm-2.3.2.post1.tar.gz")))
        if hits:
            return Path(hits[0])
    return None


def download_sdist(dest: str) -> Path | None:
    env = {**os.environ, "MAMBA_SKIP_CUDA_BUILD": "TRUE"}
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
           "--no-build-isolation", SDIST, "-d", dest]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        return None
    return find_sdist([dest])


def load_selective_scan_ref(search: list[str] | None = None):
    """Return mamba-ssm's ``selective_scan_ref`` function, or None when the sdist cannot be had."""
    search = search or [".peer", "/tmp/peer_cpu", tempfile.gettempdir()]
    sdist = find_sdist(search) or download_sdist(tempfile.gettempdir())
    if sdist is None:
        return None
    with tarfile.open(sdist) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith("mamba_ssm/ops/selective_scan_interface.py"))
        src = tf.extractfile(member).read().decode()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "selective_scan_ref")
    ns: dict = {}
    exec("import torch\nimport torch.nn.functional as F\nfrom einops import rearrange, repeat\n", ns)
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(sdist), "exec"), ns)
    return ns["selective_scan_ref"]
