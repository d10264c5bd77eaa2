"""Every ```python block of the README and docs/ runs as written on a CPU, and every `mambaseq <pipeline>`
command line of their ```bash blocks loads its config (new-user trial: the README's generation line used an
undefined ``prompt`` and CUDA graphs; docs/dna_models.md's RC-equivariant command was refused by the config
check)."""

from __future__ import annotations

import importlib
import re
import shlex
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


def _commands() -> list[tuple[str, str, list[str]]]:
    """(doc, "pipeline action", overrides) of each `mambaseq <pipeline> <action> ...` line of the docs' bash blocks,
    less those that need the reader's own files (paths, DIR, ...)."""
    out = []
    for doc in DOCS:
        for block in re.findall(r"^```bash\n(.*?)^```", doc.read_text(), re.S | re.M):
            for line in block.replace("\\\n", " ").splitlines():
                m = re.search(r"mambaseq ((apes|audio|pretrain) \S+)(.*)", line.split("#")[0])
                if m and not re.search(r"/|\.\.\.|DIR", m.group(3)):
                    # options (--resume, --config-name X) are the command line's, not Hydra overrides
                    words = shlex.split(m.group(3))
                    out.append((doc.name, m.group(1), [w for w in words if not w.startswith("--")]))
    return out


COMMANDS = _commands()


@pytest.mark.parametrize("doc,pipeline,overrides", COMMANDS,
                         ids=[f"{d}-{p}-{' '.join(o) or 'defaults'}" for d, p, o in COMMANDS])
def test_documented_command_loads_its_config(doc, pipeline, overrides):
    importlib.import_module(f"mambaseq.pipelines.{pipeline.split()[0]}").load_config(overrides)
