"""Packaging: every folder of configs/ that holds YAML is installed (listed as a package with its YAML as
package data), so `pip install -e .` has nothing to warn about and a wheel carries every Hydra config."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_folder_is_a_listed_package_with_its_yaml():
    st = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = sorted({p.parent.relative_to(ROOT) for p in (ROOT / "configs").rglob("*.yaml")})
    want = {".".join(("mambaseq",) + f.parts) for f in folders}
    assert want <= set(st["packages"]), f"configs folders missing from [tool.setuptools] packages: {want - set(st['packages'])}"
    missing = {p for p in want if "*.yaml" not in st["package-data"].get(p, [])}
    assert not missing, f"no '*.yaml' package data for {sorted(missing)}"


def test_license_is_an_spdx_string():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(project["license"], str), "use an SPDX expression (PEP 639), not the deprecated table"


def _bare_import(code: str) -> "subprocess.CompletedProcess":
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)


def test_bare_kernels_name_is_not_this_folder():
    """Run from a checkout's root (its folder on sys.path, as `python -m pytest` does), ``import kernels`` is the
    distribution of that name (Hugging Face's, which transformers >= 5.25 imports), never mambaseq's kernels/
    folder; mambaseq.kernels still imports. Without that distribution the bare name is not found."""
    import importlib.metadata

    code = ("import kernels, mambaseq.kernels as mk, pathlib; "
            "print(pathlib.Path(kernels.__file__).resolve()); print(mk.selective_scan.__module__)")
    try:
        importlib.metadata.distribution("kernels")
        installed = True
    except importlib.metadata.PackageNotFoundError:
        installed = False
    if installed:
        r = _bare_import(code)
        assert r.returncode == 0, r.stderr[-2000:]
        origin, scan = r.stdout.split()
        assert "site-packages" in origin and scan == "mambaseq.kernels.selective_scan"
    r = _bare_import("import os, sys; sys.path[:] = [os.getcwd()]; import kernels")
    assert r.returncode != 0 and "No module named 'kernels'" in r.stderr and "mambaseq.kernels" in r.stderr


def test_transformers_imports_from_a_checkout_root():
    pytest.importorskip("transformers")
    r = _bare_import("import transformers; cfg = transformers.MambaConfig(vocab_size=8, hidden_size=8, state_size=2, "
                     "num_hidden_layers=1); print(type(transformers.MambaForCausalLM(cfg)).__name__)")
    assert r.returncode == 0 and r.stdout.strip() == "MambaForCausalLM", r.stderr[-2000:]
