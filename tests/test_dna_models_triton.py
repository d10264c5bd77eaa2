"""Bidirectional / RC-equivariant models on the Triton kernels agree with the PyTorch reference path: masked-LM
logits, every parameter gradient, and RC equivariance on the Triton path.

On CPU the tiny cases run under TRITON_INTERPRET=1 in a subprocess (``kernel_utils.run_interpreted``); on a
CUDA GPU every case runs natively.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import pytest
import torch

from kernel_utils import check_errors, rel_rms, run_interpreted
from tolerances import REL_RMS



@dataclass(frozen=True)
class ModelCase:
    bidirectional: bool
    rc_equivariant: bool
    complex: bool = False
    b: int = 2
    L: int = 12

    @property
    def id(self) -> str:
        kind = "-".join([k for k, on in (("bi", self.bidirectional), ("rc", self.rc_equivariant)) if on]) or "causal"
        return f"{kind}-{'cplx' if self.complex else 'real'}-B{self.b}-L{self.L}"


ALL_CASES = [ModelCase(True, False), ModelCase(False, True), ModelCase(True, True), ModelCase(True, True, True),
             ModelCase(True, True, False, 3, 67)]
INTERP_IDS = ["bi-real-B2-L12", "rc-real-B2-L12", "bi-rc-real-B2-L12"]


def case_errors(c: ModelCase, device: str) -> dict[str, float]:
    from mambaseq import MambaConfig, MambaForMaskedLM
    from mambaseq.data.dna import complement, reverse_complement
    from mambaseq.modules import Mamba

    seed = zlib.crc32(c.id.encode())
    torch.manual_seed(seed)
    cfg = MambaConfig(d_model=8, n_layer=1, d_state=4, vocab_size=10, bidirectional=c.bidirectional,
                      rc_equivariant=c.rc_equivariant, complex=c.complex)
    ref = MambaForMaskedLM(cfg).to(device)
    tri = MambaForMaskedLM(cfg).to(device)
    tri.load_state_dict(ref.state_dict())
    for m in tri.modules():
        if isinstance(m, Mamba):
            m.backend = "triton"
    for m in ref.modules():
        if isinstance(m, Mamba):
            m.backend = "reference"
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 5, (c.b, c.L), generator=g).to(device)
    up = torch.randn(c.b, c.L, 10, generator=g).to(device)
    out = {}
    for name, model in (("ref", ref), ("tri", tri)):
        logits = model(ids)
        (logits * up).sum().backward()
        out[name] = {"logits": logits.detach(), **{f"d{k}": p.grad for k, p in model.named_parameters()}}
    errors = {k: rel_rms(out["ref"][k], out["tri"][k]) for k in out["ref"]}
    if c.rc_equivariant:
        with torch.no_grad():
            perm = complement(torch.arange(10, device=device))
            errors["rc_equivariance"] = rel_rms(out["tri"]["logits"][..., perm].flip(1),
                                                tri(reverse_complement(ids)))
    errors["__seed__"] = seed
    return errors


@pytest.fixture(scope="module")
def interpreted() -> dict[str, dict[str, float]]:
    """Errors of every INTERP_IDS case, evaluated once in one TRITON_INTERPRET=1 subprocess."""
    pytest.importorskip("triton")
    return run_interpreted(__file__, INTERP_IDS)


@pytest.mark.parametrize("case_id", INTERP_IDS)
def test_dna_models_triton_interpreter(case_id, interpreted):
    check_errors(case_id, interpreted[case_id], REL_RMS[torch.float32])


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_dna_models_triton_gpu(case):
    check_errors(case.id, case_errors(case, "cuda"), REL_RMS[torch.float32])
