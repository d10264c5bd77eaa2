"""The CPU path (backend="reference", kernels/selective_scan_cpu.py) against the oracle, a float64
step-by-step loop (selective_scan_ref): outputs, last state, every gradient."""

from __future__ import annotations

import pytest
import torch

from mambaseq.kernels import selective_scan, selective_scan_ref
from mambaseq.kernels import selective_scan_cpu as cpu_mod
from tolerances import CLOSE, SCAN_LOW_PRECISION

# (batch, dim, L, N, groups, complex, segment elements) — the small segment budgets force several
# segments and a padded tail, so the cross-segment carry and the backward's recomputation are exercised.
CASES = [
    (1, 2, 1, 1, 1, False, 1 << 21),
    (2, 4, 1, 3, 1, True, 1 << 21),
    (2, 4, 7, 3, 2, False, 1 << 21),
    (1, 6, 37, 4, 3, True, 40),
    (2, 4, 100, 5, 1, False, 7),
    (1, 3, 129, 16, 1, True, 200),
    (2, 8, 300, 4, 4, False, 512),
    (1, 2, 1000, 2, 1, False, 1 << 21),
]


def _id(c) -> str:
    b, d, L, n, g, cplx, seg = c
    return f"B{b}-D{d}-L{L}-N{n}-g{g}-{'cplx' if cplx else 'real'}-seg{seg}"


def make_inputs(b, d, L, n, g, cplx, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s, dt=dtype: torch.randn(*s, generator=gen, dtype=dt)  # noqa: E731
    cd = torch.complex128 if dtype == torch.float64 else torch.complex64
    if cplx:
        A = torch.complex(-torch.rand(d, n, generator=gen, dtype=dtype) - 0.1, r(d, n) * 3)
        B, C, h0 = r(b, g, n, L, dt=cd), r(b, g, n, L, dt=cd), r(b, d, n, dt=cd)
    else:
        A = -torch.rand(d, n, generator=gen, dtype=dtype) * 2 - 0.1
        B, C, h0 = r(b, g, n, L), r(b, g, n, L), r(b, d, n)
    return dict(u=r(b, d, L), delta=r(b, d, L) * 0.5, A=A, B=B, C=C, D=r(d), z=r(b, d, L), delta_bias=r(d), h0=h0)


@pytest.fixture
def segment(monkeypatch):
    def set_(elems: int) -> None:
        monkeypatch.setattr(cpu_mod, "SEGMENT_ELEMS", elems)

    return set_


@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("options", ["all", "bare"])
@pytest.mark.parametrize("strategy", ["chunked", "plain-loop"])
def test_cpu_path_matches_the_oracle(case, options, strategy, segment, monkeypatch):
    """Chunked scans (narrow problems) and the plain per-step loop (wide problems)."""
    b, d, L, n, g, cplx, seg = case
    segment(seg)
    if strategy == "plain-loop":  # the path wide problems take: one op per time step, no chunk carries
        monkeypatch.setattr(cpu_mod, "MIN_ROW", 1)
    x = make_inputs(b, d, L, n, g, cplx)
    full = options == "all"
    names = ["u", "delta", "A", "B", "C"] + (["D", "z", "delta_bias", "h0"] if full else [])
    for k in names:
        x[k].requires_grad_(True)
    kw = dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], delta_softplus=True) if full else {}
    h0 = x["h0"] if full else None
    delta = x["delta"] if full else x["delta"].abs()  # without softplus, keep the step positive
    out, last = selective_scan(x["u"], delta, x["A"], x["B"], x["C"], **kw, return_last_state=True,
                               initial_state=h0, backend="reference")
    ref_out, ref_last = selective_scan_ref(x["u"], delta, x["A"], x["B"], x["C"], **kw, initial_state=h0)
    torch.testing.assert_close(out, ref_out, **CLOSE["fp64_oracle"])
    torch.testing.assert_close(last, ref_last, **CLOSE["fp64_oracle"])
    gen = torch.Generator().manual_seed(1)
    gout = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    glast = torch.randn(last.shape, generator=gen, dtype=last.dtype)

    def loss(o, s):
        return (o * gout).sum() + (s * glast.conj()).real.sum()

    params = [x[k] for k in names]
    got = torch.autograd.grad(loss(out, last), params, retain_graph=True)
    want = torch.autograd.grad(loss(ref_out, ref_last), params)
    for name, g1, g2 in zip(names, got, want):
        assert torch.isfinite(torch.view_as_real(g1) if g1.is_complex() else g1).all(), name
        torch.testing.assert_close(g1, g2, **CLOSE["fp64_oracle_grad"], msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("cplx", [False, True], ids=["real", "cplx"])
def test_gradcheck_tiny(cplx, segment):
    segment(16)  # several segments even at L = 9
    x = make_inputs(1, 2, 9, 2, 1, cplx)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0"]
    args = [x[k].requires_grad_(True) for k in names]

    def f(u, delta, A, B, C, D, z, delta_bias, h0):
        out, last = selective_scan(u, delta, A, B, C, D, z, delta_bias, True, True, initial_state=h0,
                                   backend="reference")
        return out, torch.view_as_real(last) if last.is_complex() else last

    assert torch.autograd.gradcheck(f, args, eps=1e-6, **CLOSE["fp64_gradcheck"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_low_precision_inputs_keep_fp32_state(dtype):
    x = make_inputs(2, 4, 33, 4, 1, False, dtype=torch.float32)
    u, delta = x["u"].to(dtype), x["delta"].to(dtype)
    out, last = selective_scan(u, delta, x["A"], x["B"].to(dtype), x["C"].to(dtype), x["D"], x["z"].to(dtype),
                               x["delta_bias"], True, True, backend="reference")
    assert out.dtype == dtype and last.dtype == torch.float32
    ref, _ = selective_scan_ref(*(t.to(dtype).double() for t in (u, delta)), x["A"].double(),
                                  x["B"].to(dtype).double(), x["C"].to(dtype).double(), x["D"].double(),
                                  x["z"].to(dtype).double(), x["delta_bias"].double(), True)
    err = (out.double() - ref).norm() / ref.norm()
    assert err < SCAN_LOW_PRECISION[dtype], err


def test_interleaved_complex_bc_matches_complex_tensors():
    x = make_inputs(2, 4, 11, 3, 1, True, dtype=torch.float32)
    B, C = x["B"], x["C"]
    inter = lambda t: torch.view_as_real(t).flatten(-2)  # (b g N L) complex -> (b g N 2L) interleaved  # noqa: E731
    y1 = selective_scan(x["u"], x["delta"], x["A"], B, C, backend="reference")
    y2 = selective_scan(x["u"], x["delta"], x["A"], inter(B[:, 0]), inter(C[:, 0]), backend="reference")
    torch.testing.assert_close(y1, y2)


def test_long_sequence_is_chunked_not_materialised(segment):
    """L = 2^16 at a small segment budget: forward matches a run split in two with initial_state."""
    segment(1 << 14)
    x = make_inputs(1, 4, 1 << 16, 4, 1, False, dtype=torch.float32)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, True)
    out, last = selective_scan(*args, backend="reference")
    h = 1 << 15
    sl = lambda t, a, b: t[..., a:b]  # noqa: E731
    o1, l1 = selective_scan(*(sl(t, 0, h) for t in args[:2]), x["A"], sl(x["B"], 0, h), sl(x["C"], 0, h), x["D"],
                            sl(x["z"], 0, h), x["delta_bias"], True, True, backend="reference")
    o2, l2 = selective_scan(*(sl(t, h, None) for t in args[:2]), x["A"], sl(x["B"], h, None), sl(x["C"], h, None),
                            x["D"], sl(x["z"], h, None), x["delta_bias"], True, True, initial_state=l1,
                            backend="reference")
    torch.testing.assert_close(out, torch.cat([o1, o2], -1), **CLOSE["fp32_split_scan"])
    torch.testing.assert_close(last, l2, **CLOSE["fp32_split_scan"])


BAD = [
    ("u-2d", dict(u=torch.randn(4, 8)), "u must be"),
    ("delta-shape", dict(delta=torch.randn(2, 4, 7)), "delta must have"),
    ("A-dim", dict(A=-torch.rand(5, 3)), "A must be"),
    ("A-int", dict(A=torch.ones(4, 3, dtype=torch.int64)), "A must be float32"),
    ("B-2d", dict(B=torch.randn(4, 3)), "B must be input-dependent"),
    ("C-N", dict(C=torch.randn(2, 5, 8)), "C must have shape"),
    ("B-groups", dict(B=torch.randn(2, 3, 3, 8)), "groups=3 must divide"),
    ("B-complex-for-real-A", dict(B=torch.randn(2, 3, 8, dtype=torch.complex64)), "B must be real"),
    ("D-shape", dict(D=torch.randn(5)), "D must be"),
    ("z-shape", dict(z=torch.randn(2, 4, 9)), "z must have"),
    ("bias-shape", dict(delta_bias=torch.randn(3)), "delta_bias must be"),
    ("h0-shape", dict(initial_state=torch.randn(2, 4, 4)), "initial_state must be"),
    ("backend", dict(backend="cuda"), "backend must be one of"),
]


@pytest.mark.parametrize("name,override,msg", BAD, ids=[b[0] for b in BAD])
def test_invalid_arguments_raise_value_error_naming_them(name, override, msg):
    args = dict(u=torch.randn(2, 4, 8), delta=torch.rand(2, 4, 8), A=-torch.rand(4, 3), B=torch.randn(2, 3, 8),
                C=torch.randn(2, 3, 8))
    args.update(override)
    with pytest.raises(ValueError, match=msg):
        selective_scan(**args)


def test_triton_backend_without_gpu_is_a_clear_error(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = make_inputs(1, 2, 4, 2, 1, False, dtype=torch.float32)
    with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors"):
        selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], backend="triton")
