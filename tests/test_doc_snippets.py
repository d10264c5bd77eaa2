"""Every ```python block of the README and docs/ runs as written on a CPU (new-user trial: the README's
generation line used an undefined ``prompt`` and CUDA graphs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from seeding import seed_for

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [(doc, i, code) for doc in DOCS
          for i, code in enumerate(re.findall(r"^```python\n(.*?)^```", doc.read_text(), re.S | re.M))]


@pytest.mark.parametrize("doc,i,code", BLOCKS, ids=[f"{d.relative_to(ROOT)}-{i}" for d, i, _ in BLOCKS])
def test_python_snippet_runs(request, tmp_path, monkeypatch, doc, i, code):
    monkeypatch.chdir(tmp_path)  # snippets save checkpoints to relative folders
    torch.manual_seed(seed_for(request))
    exec(compile(code, f"{doc.name} python block {i}", "exec"), {"__name__": "__snippet__"})
