"""One checkpoint format and one registry for every architecture (mambaseq.pretrained): save/load round trips,
load_pretrained picks the class from config.json (SaShiMi included), build_model by name, the SaShiMi
config.json written before the block fields were shared still loads, and mismatched architectures are named."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mambaseq import MambaConfig, SaShiMiConfig
from mambaseq.model import load_pretrained
from mambaseq.pretrained import ARCHITECTURES, architecture_class, build_model

SASHIMI = dict(d_model=8, n_layer=1, pool=[2, 2], d_state=4)
CONFIGS = {
    "MambaLMHeadModel": MambaConfig.from_name("debug", vocab_size=10),
    "MambaForSequenceClassification": MambaConfig.from_name("debug", vocab_size=10, num_labels=3),
    "MambaForMaskedLM": MambaConfig.from_name("debug", vocab_size=10, bidirectional=True),
    "SaShiMiLM": SaShiMiConfig(**SASHIMI),
}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_architecture_is_registered():
    assert set(ARCHITECTURES) == set(CONFIGS)
    code = "import mambaseq.pretrained as p; print(sorted(p.ARCHITECTURES))"  # a fresh interpreter, one import
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(sorted(CONFIGS))


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_build_save_load_round_trip(arch, tmp_path):
    torch.manual_seed(0)
    model = build_model(arch, CONFIGS[arch]).eval()
    assert type(model) is architecture_class(arch)
    d = model.save_pretrained(tmp_path / arch)
    assert json.loads((d / "config.json").read_text())["architecture"] == arch
    for loaded in (load_pretrained(d), architecture_class(arch).from_pretrained(d)):
        assert type(loaded) is type(model) and loaded.cfg == model.cfg and _same_weights(loaded, model)


def test_build_model_from_a_mapping_with_field_overrides():
    m = build_model("SaShiMiLM", SASHIMI, vocab_size=12, dt_max=0.05)
    assert m.cfg == SaShiMiConfig(**{**SASHIMI, "vocab_size": 12, "dt_max": 0.05})
    assert build_model("MambaLMHeadModel", CONFIGS["MambaLMHeadModel"], n_layer=1).cfg.n_layer == 1
    with pytest.raises(ValueError, match="unknown architecture 'Mamba'.*SaShiMiLM"):
        build_model("Mamba", {})
    with pytest.raises(ValueError, match=r"unknown SaShiMiConfig field\(s\) \['pools'\] \(did you mean 'pool'"):
        build_model("SaShiMiLM", {"pools": [2]})
    with pytest.raises(TypeError, match="SaShiMiLM takes a SaShiMiConfig"):
        build_model("SaShiMiLM", CONFIGS["MambaLMHeadModel"])


def test_sashimi_config_json_of_the_old_field_set_loads(tmp_path):
    """Before the block fields were shared, SaShiMi's config.json held only these keys: it still loads."""
    torch.manual_seed(0)
    model = build_model("SaShiMiLM", SASHIMI)
    d = model.save_pretrained(tmp_path / "s")
    old_keys = ("d_model", "n_layer", "pool", "expand_pool", "vocab_size", "d_state", "d_conv", "expand", "complex",
                "norm", "backend", "tie_embeddings", "extra")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({"architecture": "SaShiMiLM", **{k: cfg[k] for k in old_keys}}))
    loaded = load_pretrained(d)
    assert loaded.cfg == model.cfg and _same_weights(loaded, model)


def test_another_architecture_is_named(tmp_path):
    lm = build_model("MambaLMHeadModel", CONFIGS["MambaLMHeadModel"]).save_pretrained(tmp_path / "lm")
    sash = build_model("SaShiMiLM", SASHIMI).save_pretrained(tmp_path / "sashimi")
    with pytest.raises(ValueError, match="architecture 'MambaLMHeadModel', expected SaShiMiLM"):
        architecture_class("SaShiMiLM").from_pretrained(lm)
    with pytest.raises(ValueError, match="architecture 'SaShiMiLM', expected MambaForSequenceClassification"):
        architecture_class("MambaForSequenceClassification").from_pretrained(sash, num_labels=2)
    clf = architecture_class("MambaForSequenceClassification").from_pretrained(lm, num_labels=2)  # LM -> classifier
    assert clf.cfg.num_labels == 2
