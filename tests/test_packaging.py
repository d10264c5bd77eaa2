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
