"""Every MambaBlockConfig field reaches every block, in each backbone that is built of blocks (the causal LM
and SaShiMi at all of its scales): a field a backbone dropped would leave its blocks at the default."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaseq import MambaBlockConfig, MambaConfig, MambaLMHeadModel, ResidualBlock, SaShiMiConfig, SaShiMiLM


def _dt(block: ResidualBlock) -> torch.Tensor:
    """The initial step sizes of a block: softplus(dt_proj.bias)."""
    return F.softplus(block.mixer.dt_proj.bias.detach())


# field -> (a value other than both configs' defaults, what the block shows of it)
PROBES = {
    "d_state": (3, lambda b: b.mixer.d_state),
    "d_conv": (2, lambda b: b.mixer.conv1d.weight.shape[-1]),
    "expand": (3, lambda b: b.mixer.d_inner // b.mixer.d_model),
    "dt_rank": (5, lambda b: b.mixer.dt_proj.weight.shape[1]),
    "dt_min": (0.05, lambda b: round(float(_dt(b).min()), 4)),  # with dt_max = 0.05: every dt is 0.05
    "dt_max": (0.05, lambda b: round(float(_dt(b).max()), 4)),
    "dt_init_floor": (0.2, lambda b: round(float(_dt(b).min()), 4)),  # above dt_max: the floor wins
    "conv_bias": (False, lambda b: b.mixer.conv1d.bias is not None),
    "bias": (True, lambda b: b.mixer.in_proj.bias is not None and b.mixer.out_proj.bias is not None),
    "complex": (None, lambda b: b.mixer.complex),  # None: the opposite of the config's default
    "norm": ("layer", lambda b: "layer" if isinstance(b.norm, nn.LayerNorm) else "rms"),
    "norm_eps": (1e-3, lambda b: b.norm.eps),
    "backend": ("reference", lambda b: b.mixer.backend),
}
PAIRED = {"dt_min": {"dt_max": 0.05}, "dt_max": {"dt_min": 0.05}}


def test_every_block_field_has_a_probe():
    assert set(PROBES) == {f.name for f in dataclasses.fields(MambaBlockConfig)}


def _blocks(model: nn.Module) -> list[ResidualBlock]:
    return [m for m in model.modules() if isinstance(m, ResidualBlock)]


@pytest.mark.parametrize("arch", ["MambaLMHeadModel", "SaShiMiLM"])
@pytest.mark.parametrize("name", sorted(PROBES))
def test_block_field_reaches_every_block(arch, name):
    value, probe = PROBES[name]
    if arch == "SaShiMiLM":
        base, cls = dict(d_model=8, n_layer=1, pool=(2, 2), d_state=4), SaShiMiLM
        default = SaShiMiConfig(**base)
        cfg = SaShiMiConfig(**{**base, name: not default.complex if value is None else value, **PAIRED.get(name, {})})
    else:
        base, cls = dict(vocab_size=10), MambaLMHeadModel
        default = MambaConfig.from_name("debug", **base)
        cfg = MambaConfig.from_name("debug", **{**base, name: not default.complex if value is None else value,
                                                **PAIRED.get(name, {})})
    want = getattr(cfg, name)
    if name == "dt_init_floor":
        want = round(value, 4)
    blocks = _blocks(cls(cfg))
    assert len(blocks) >= 2 and all(probe(b) == want for b in blocks), [probe(b) for b in blocks]
    assert all(probe(b) != want for b in _blocks(cls(default))), f"{name}: the probe cannot tell the default apart"
