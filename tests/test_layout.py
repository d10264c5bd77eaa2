"""The layout a newcomer relies on (issue 11): the README's layout table matches the tree, no pipeline imports
another, and the config groups offer what the docs promise (every named size as ``model=<size>``). Import
cycles and private-name imports are checked over the whole tree in tests/test_structure.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mambaseq.config import SIZES
from mambaseq.settings import compose

ROOT = Path(__file__).resolve().parent.parent
# installed name of each top-level source folder (pyproject.toml's package-dir)
PACKAGES = {"mambaseq": "mambaseq", "kernels": "mambaseq.kernels", "pipelines": "mambaseq.pipelines",
            "data_prep": "mambaseq.data_prep", "configs": "mambaseq.configs"}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, name in PACKAGES.items():
        for p in sorted((ROOT / folder).rglob("*.py")):
            parts = [*name.split("."), *p.relative_to(ROOT / folder).with_suffix("").parts]
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(module: str, path: Path) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) of every import in ``path``, relative ones resolved."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
            out += [(base, a.name, node.lineno) for a in node.names]
    return out


def test_readme_layout_table_matches_the_tree():
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Layout"):]
    listed = {m.rstrip("/") for m in re.findall(r"^\| `([^`]+/)` \|", table, re.M)}
    for folder in listed:
        assert (ROOT / folder).is_dir(), f"README lists {folder}/, which does not exist"
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
               and not p.name.endswith(".egg-info") and p.name not in ("data", "runs")}
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "mambaseq").glob("*/__init__.py")}
    assert folders | packages <= listed, f"folders missing from the README's layout table: {(folders | packages) - listed}"


def test_no_pipeline_imports_another():
    bad = []
    for m, p in _modules().items():
        rel = str(p.relative_to(ROOT))
        for target, name, line in _imports(m, p):
            if m.startswith("mambaseq.pipelines.") and target.startswith("mambaseq.pipelines"):
                bad.append(f"{rel}:{line} imports the pipeline {target}.{name}".rstrip("."))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("size", sorted(SIZES))
def test_every_named_size_is_a_model_option(size):
    """``model=<size>`` works like ``model.size=<size>`` (the same options as every other size)."""
    by_group = compose("pretrain", [f"model={size}"])["model"]
    by_key = compose("pretrain", [f"model.size={size}"])["model"]
    assert by_group == by_key and by_group["size"] == size
