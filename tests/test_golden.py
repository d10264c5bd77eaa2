"""Golden loss values pin the numerics of the smallest models on the CPU: the loss of each model below at
initialisation and after every one of STEPS SGD steps on one fixed, seeded batch, compared with the values
checked in at tests/golden/debug_model.json (tolerance ``CLOSE["golden_loss"]``). SGD, not Adam: Adam turns
the rounding noise of near-zero gradients (a zero-initialised classifier head) into full-size steps. A change that moves the
initialisation, a block's arithmetic, the scan, the CPU kernels or a loss head by more than float rounding fails
here, naming the model and the step.

Regenerate (only after a change of numerics that is meant, and say why in the commit):

    MAMBASEQ_UPDATE_GOLDEN=1 python -m pytest -q tests/test_golden.py

which rewrites the file instead of comparing (the tests then report that they skipped). CI never sets it.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mambaseq import MambaConfig, SaShiMiConfig, build_model
from tolerances import CLOSE

GOLDEN = Path(__file__).parent / "golden" / "debug_model.json"
UPDATE = os.environ.get("MAMBASEQ_UPDATE_GOLDEN") == "1"
STEPS = 4
BATCH, LENGTH, VOCAB, LABELS = 4, 48, 16, 3


def _debug(**kw) -> MambaConfig:
    return MambaConfig.from_name("debug", vocab_size=VOCAB, backend="reference", **kw)


def _sashimi(**kw) -> SaShiMiConfig:
    return SaShiMiConfig(d_model=16, n_layer=1, pool=(2, 2), d_state=4, vocab_size=VOCAB, backend="reference", **kw)


# name -> (architecture, config, loss); every config is the smallest of its kind ("debug" size)
MODELS = {
    "lm-real": ("MambaLMHeadModel", _debug(), "next_token"),
    "lm-complex": ("MambaLMHeadModel", _debug(complex=True), "next_token"),
    "classifier-real": ("MambaForSequenceClassification", _debug(num_labels=LABELS), "label"),
    "classifier-complex": ("MambaForSequenceClassification", _debug(num_labels=LABELS, complex=True), "label"),
    "classifier-6mer": ("MambaForSequenceClassification", _debug(num_labels=LABELS, kmer_size=6), "label"),
    "classifier-rc": ("MambaForSequenceClassification", _debug(num_labels=LABELS, rc_equivariant=True), "label"),
    "mlm-bidirectional": ("MambaForMaskedLM", _debug(bidirectional=True), "same_token"),
    "sashimi-real": ("SaShiMiLM", _sashimi(complex=False), "next_token"),
    "sashimi-complex": ("SaShiMiLM", _sashimi(complex=True), "next_token"),
}


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(20261201)
    ids = torch.randint(0, 4, (BATCH, LENGTH), generator=g)  # bases: every model here reads them
    return ids, torch.randint(0, LABELS, (BATCH,), generator=g)


def _loss(model: torch.nn.Module, kind: str, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if kind == "label":
        return F.cross_entropy(model(ids).float(), labels)
    logits = model(ids).float()
    if kind == "next_token":
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    return F.cross_entropy(logits.flatten(0, 1), ids.flatten())


def _losses(name: str) -> list[float]:
    """Loss at initialisation, then after each AdamW step on the same batch."""
    arch, cfg, kind = MODELS[name]
    torch.manual_seed(0)
    model = build_model(arch, cfg).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ids, labels = _batch()
    out = []
    for step in range(STEPS + 1):
        loss = _loss(model, kind, ids, labels)
        out.append(float(loss.detach()))
        if step < STEPS:
            opt.zero_grad()
            loss.backward()
            opt.step()
    return out


@pytest.fixture(scope="module")
def golden():
    if UPDATE:
        values = {name: _losses(name) for name in MODELS}
        GOLDEN.write_text(json.dumps({
            "note": "loss at init, then after each of `steps` SGD steps (lr 0.05, momentum 0.9) on one seeded batch; "
                    "regenerate with MAMBASEQ_UPDATE_GOLDEN=1 (tests/test_golden.py)",
            "steps": STEPS, "torch": torch.__version__, "machine": platform.machine(), "losses": values,
        }, indent=2) + "\n")
        pytest.skip(f"MAMBASEQ_UPDATE_GOLDEN=1: wrote {GOLDEN}")
    return json.loads(GOLDEN.read_text())


def test_golden_file_covers_every_model(golden):
    assert set(golden["losses"]) == set(MODELS) and golden["steps"] == STEPS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_losses_match_the_golden_values(name, golden, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    want = golden["losses"][name]
    got = _losses(name)
    bad = [f"step {i}: {g:.7f} vs golden {w:.7f}" for i, (g, w) in enumerate(zip(got, want))
           if abs(g - w) > CLOSE["golden_loss"]["atol"] + CLOSE["golden_loss"]["rtol"] * abs(w)]
    assert not bad, f"{name}: losses moved from the checked-in values ({GOLDEN.name}):\n" + "\n".join(bad)
    assert got[-1] < got[0], f"{name}: {STEPS} steps on one batch did not lower the loss: {got}"
