"""Shared helpers for the kernel tests: per-dtype tolerances, relative-RMS comparison, and a runner
that evaluates test cases in a subprocess under TRITON_INTERPRET=1.

Why a subprocess: Triton decides at ``@triton.jit`` time whether a kernel is interpreted, and
setting TRITON_INTERPRET=1 inside the pytest process would also change what other tests see (e.g. the
"triton without a GPU raises" checks). One subprocess per test module runs that module's whole CPU
subset, so the interpreter's start-up is paid once.

Run as a script (used by ``run_interpreted``):  python tests/kernel_utils.py <test_file> <case_id>...
It prints one JSON object {case_id: {quantity: rel_rms_error} | {"__error__": message}}.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import traceback
from pathlib import Path

import torch

from tolerances import REL_RMS

TOLERANCES = REL_RMS  # relative RMS error allowed, by dtype: the one table is tests/tolerances.py
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def rel_rms(ref: torch.Tensor, out: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (complex-aware); NaN if out has NaN/Inf, or shapes differ."""
    if tuple(ref.shape) != tuple(out.shape):
        return math.nan
    wide = torch.complex128 if (ref.is_complex() or out.is_complex()) else torch.float64
    r = ref.detach().to("cpu", wide)
    o = out.detach().to("cpu", wide)
    if not torch.isfinite(torch.view_as_real(o) if o.is_complex() else o).all():
        return math.nan
    den = r.abs().pow(2).sum().sqrt().item()
    num = (o - r).abs().pow(2).sum().sqrt().item()
    return num / den if den > 0 else num


def assert_close(name: str, ref: torch.Tensor | float, out: torch.Tensor | float, tol: float) -> None:
    """Fail with a readable message if rel RMS error of ``out`` vs ``ref`` exceeds tol (or is NaN).

    ``ref``/``out`` may be tensors, or ``ref`` may be a precomputed error with ``out`` None-like.
    """
    err = ref if isinstance(ref, float) else rel_rms(ref, out)
    assert not math.isnan(err), f"{name}: NaN/Inf or shape mismatch in the output"
    assert err <= tol, f"{name}: relative RMS error {err:.3e} > tolerance {tol:.1e}"


def check_errors(case_id: str, errors: dict[str, float], tol: float) -> None:
    """Assert every quantity of one case is within tol; report all offenders at once."""
    if "__error__" in errors:
        raise AssertionError(f"{case_id}: {errors['__error__']}")
    seed = errors.get("__seed__")
    errors = {k: v for k, v in errors.items() if not k.startswith("__")}
    bad = {k: v for k, v in errors.items() if math.isnan(v) or v > tol}
    assert not bad, f"{case_id} (seed {seed}): over tolerance {tol:.1e}: " + ", ".join(f"{k}={v:.3e}" for k, v in bad.items())
    assert errors, f"{case_id}: nothing was compared"


def run_interpreted(test_file: str, case_ids: list[str], timeout: float = 900) -> dict[str, dict]:
    """Evaluate ``case_errors(case, 'cpu')`` of ``test_file`` for each id under TRITON_INTERPRET=1."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(test_file), *case_ids],
        capture_output=True, text=True, env=env, timeout=timeout,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"interpreter subprocess failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


def table_tests(test_file: str, table: list, interp_ids: list[str], case_errors) -> tuple:
    """The standard pair of tests for a kernel module's shape table: the ``interp_ids`` cases under the CPU
    interpreter (one subprocess for the module) and every case on a CUDA GPU (marked ``gpu``), each checked
    at the tolerance of its ``dtype``. Returns (fixture, interpreter test, gpu test) to bind in the module."""
    import pytest

    @pytest.fixture(scope="module")
    def interp_results():
        pytest.importorskip("triton")
        return run_interpreted(test_file, interp_ids)

    @pytest.mark.parametrize("case", [c for c in table if c.id in interp_ids], ids=lambda c: c.id)
    def test_interpreter(case, interp_results):
        check_errors(case.id, interp_results[case.id], TOLERANCES[DTYPES[case.dtype]])

    @pytest.mark.parametrize("case", table, ids=lambda c: c.id)
    @pytest.mark.gpu
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
    def test_gpu(case):
        check_errors(case.id, case_errors(case, "cuda"), TOLERANCES[DTYPES[case.dtype]])

    return interp_results, test_interpreter, test_gpu


def _load_module(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_interp", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up here
    sys.path.insert(0, str(Path(path).parent))
    spec.loader.exec_module(mod)
    return mod


def _worker(test_file: str, ids: list[str]) -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1"
    mod = _load_module(test_file)
    cases = {c.id: c for c in mod.ALL_CASES}
    result = {}
    for cid in ids:
        try:
            result[cid] = mod.case_errors(cases[cid], "cpu")
        except Exception:  # report, so the parent test shows which case broke and how
            result[cid] = {"__error__": traceback.format_exc()[-3000:]}
    print(json.dumps(result))


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2:])
