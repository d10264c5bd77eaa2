"""Structure of the code base, read from the source (AST, nothing imported): the import graph of mambaseq.*
has no cycle, and no module imports a ``_private`` name of another project module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# top-level folders installed as mambaseq.<name> (pyproject.toml's package-dir), besides mambaseq/ itself
MAPPED = ("kernels", "pipelines", "data_prep", "configs")
# Left for the pipeline half of issue 11 (its files): remove each entry when it is fixed there.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()  # none left: keep it empty
KNOWN_PRIVATE: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str | None:
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    if parts[0] in MAPPED:
        parts = ["mambaseq", *parts]
    elif parts[0] != "mambaseq":
        return None
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    files = [p for top in ("mambaseq", *MAPPED) for p in (ROOT / top).rglob("*.py")]
    return {_module_name(p): p for p in files}


def _resolve(mod: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str, path: Path, modules: set[str]) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import of ``path``, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(mod, path, node)
            for a in node.names:
                sub = f"{src}.{a.name}"
                out.append((sub, None, node.lineno) if sub in modules else (src, a.name, node.lineno))
    return out


def test_import_graph_of_mambaseq_has_no_cycle():
    srcs = _sources()
    graph = {m: {t for t, _, _ in _imports(m, p, set(srcs)) if t in srcs and t != m and (m, t) not in KNOWN_CYCLE_EDGES}
             for m, p in srcs.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            assert state.get(t) != 1, f"import cycle: {' -> '.join(stack[stack.index(t):] + [t])}"
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _project_files() -> list[Path]:
    return [p for top in ("mambaseq", *MAPPED, "tests", "bench", "scripts") for p in (ROOT / top).rglob("*.py")]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_imports_a_private_name_of_another():
    srcs = _sources()
    found = set()
    for path in _project_files():
        mod = _module_name(path) or path.stem
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())
        aliases = {}  # local name -> project module it is bound to
        for src, name, line in _imports(mod, path, set(srcs)):
            if name is not None and _private(name) and src.startswith("mambaseq"):
                found.add((rel, f"{src}.{name}", line))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                src = _resolve(mod, path, node)
                aliases.update({a.asname or a.name: f"{src}.{a.name}" for a in node.names if f"{src}.{a.name}" in srcs})
            elif isinstance(node, ast.Import):
                aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in srcs})
        for node in ast.walk(tree):  # module._name through a module bound above
            if isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name) \
                    and node.value.id in aliases:
                found.add((rel, f"{aliases[node.value.id]}.{node.attr}", node.lineno))
    bad = sorted(f for f in found if (f[0], f[1]) not in KNOWN_PRIVATE)
    assert not bad, "private names imported from another module:\n" + "\n".join(f"{f}:{ln}: {n}" for f, n, ln in bad)
