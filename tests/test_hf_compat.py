"""Checkpoints of other projects: a real transformers MambaForCausalLM loads with equal logits (and a
mambaseq LM exported to that format loads in transformers with equal logits); a mamba-ssm folder (config.json +
pytorch_model.bin) loads without unpickling code; unknown config keys and weights are named in errors."""

from __future__ import annotations

import json
import pickle
import zlib

import pytest
import torch

from mambaseq import MambaConfig, MambaForMaskedLM, MambaForSequenceClassification, MambaLMHeadModel, load_pretrained
from mambaseq.hf_compat import checkpoint_format, save_transformers
from tolerances import FOREIGN_LOGITS



def seed_of(request) -> int:
    return zlib.crc32(request.node.name.encode())


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


@pytest.fixture
def hf_folder(request, tmp_path):
    """A tiny random transformers MambaForCausalLM saved by transformers itself -> (model, folder)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed_of(request))
    tied = getattr(request, "param", True)
    cfg = transformers.MambaConfig(vocab_size=13, hidden_size=24, state_size=6, num_hidden_layers=2, expand=2,
                                   conv_kernel=3, time_step_rank=3, tie_word_embeddings=tied, use_bias=not tied)
    hf = transformers.MambaForCausalLM(cfg).eval()
    with torch.no_grad():  # move the norms and D away from their init values so every weight matters
        for name, p in hf.named_parameters():
            if "norm" in name or name.endswith(".D"):
                p.add_(0.3 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")
    return hf, tmp_path / "hf"


@pytest.mark.parametrize("hf_folder", [True, False], ids=["tied", "untied-bias"], indirect=True)
def test_transformers_checkpoint_loads_with_equal_logits(request, hf_folder):
    hf, folder = hf_folder
    assert checkpoint_format(folder) == "transformers"
    ours = MambaLMHeadModel.from_pretrained(folder).eval()
    assert type(load_pretrained(folder)) is MambaLMHeadModel
    x = torch.randint(0, 13, (2, 45), generator=torch.Generator().manual_seed(seed_of(request)))
    with torch.no_grad():
        diff = max_diff(ours(x), hf(x).logits)
    print(f"transformers -> mambaseq max |logit diff| {diff:.2e}")
    assert diff <= FOREIGN_LOGITS


def test_export_to_transformers_loads_with_equal_logits(request, tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed_of(request))
    ours = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=10, d_conv=3)).eval()  # padded to 16
    save_transformers(ours, tmp_path)
    hf = transformers.MambaForCausalLM.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 10, (3, 38), generator=torch.Generator().manual_seed(seed_of(request)))
    with torch.no_grad():
        diff = max_diff(hf(x).logits, ours(x))
    print(f"mambaseq -> transformers max |logit diff| {diff:.2e}")
    assert diff <= FOREIGN_LOGITS
    back = MambaLMHeadModel.from_pretrained(tmp_path).eval()  # and back again: the same weights, vocab unpadded
    for k, v in back.state_dict().items():
        assert torch.equal(v, ours.state_dict()[k][: len(v)]), k
    with torch.no_grad():
        assert max_diff(back(x), ours(x)) <= 1e-6
    with pytest.raises(ValueError, match="real SSMs and RMSNorm"):
        save_transformers(MambaLMHeadModel(MambaConfig.from_name("debug", complex=True)), tmp_path / "c")


def test_classifier_and_mlm_start_from_a_transformers_lm(hf_folder):
    hf, folder = hf_folder
    clf = MambaForSequenceClassification.from_pretrained(folder, num_labels=4, rc_equivariant=True, pooling="mean")
    want = {k.replace("embeddings", "embedding"): v for k, v in hf.state_dict().items() if k.startswith("backbone.")}
    for k, v in clf.backbone.state_dict().items():
        assert torch.equal(v, want[f"backbone.{k}"]), k
    assert clf(torch.randint(0, 4, (2, 9))).shape == (2, 4)
    mlm = MambaForMaskedLM.from_pretrained(folder)
    assert torch.equal(mlm.lm_head.weight, hf.lm_head.weight)


def write_mamba_ssm(folder, model: MambaLMHeadModel, **config_extra) -> None:
    """A mamba-ssm MambaLMHeadModel.save_pretrained folder holding ``model``'s weights under mamba-ssm's names."""
    c = model.cfg
    folder.mkdir(parents=True, exist_ok=True)
    config = {"d_model": c.d_model, "d_intermediate": 0, "n_layer": c.n_layer, "vocab_size": c.vocab_size,
              "ssm_cfg": {"d_state": c.d_state, "d_conv": c.d_conv, "expand": c.expand, "layer": "Mamba1"},
              "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": c.norm == "rms", "residual_in_fp32": True,
              "fused_add_norm": True, "pad_vocab_size_multiple": c.pad_vocab_size_multiple, "tie_embeddings": True,
              **config_extra}
    (folder / "config.json").write_text(json.dumps(config))
    names = {"backbone.embedding.weight", "backbone.norm_f.weight", "backbone.norm_f.bias", "lm_head.weight"}
    names |= {f"backbone.layers.{i}.{m}" for i in range(c.n_layer) for m in
              ["norm.weight", "norm.bias", "mixer.A_log", "mixer.D"] + [f"mixer.{p}.{w}" for p in
              ("in_proj", "conv1d", "x_proj", "dt_proj", "out_proj") for w in ("weight", "bias")]}
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert set(sd) <= names, set(sd) - names  # mamba-ssm's names, nothing renamed
    torch.save(sd, folder / "pytorch_model.bin")


@pytest.mark.parametrize("norm", ["rms", "layer"])
def test_mamba_ssm_checkpoint_loads_with_equal_logits(request, tmp_path, norm):
    torch.manual_seed(seed_of(request))
    ref = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=50, norm=norm)).eval()
    write_mamba_ssm(tmp_path, ref)
    assert checkpoint_format(tmp_path) == "mamba_ssm"
    loaded = load_pretrained(tmp_path).eval()
    x = torch.randint(0, 50, (2, 31), generator=torch.Generator().manual_seed(seed_of(request)))
    with torch.no_grad():
        diff = max_diff(loaded(x), ref(x))
    print(f"mamba-ssm folder max |logit diff| {diff:.2e}")
    assert diff <= FOREIGN_LOGITS and loaded.cfg.padded_vocab_size == 56


class Payload:
    """Unpickling this would call print: a stand-in for arbitrary code in a malicious .bin."""

    def __reduce__(self):
        return (print, ("PWNED: code ran while loading",))


def test_mamba_ssm_bin_is_not_unpickled_as_code(tmp_path, capsys):
    ref = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=16))
    write_mamba_ssm(tmp_path, ref)
    sd = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    torch.save({**sd, "evil": Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(pickle.UnpicklingError):
        MambaLMHeadModel.from_pretrained(tmp_path)
    assert "PWNED" not in capsys.readouterr().out


def test_unknown_config_keys_and_weights_are_named(tmp_path):
    ref = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=16))
    write_mamba_ssm(tmp_path / "a", ref, rotary_dim=8)
    with pytest.raises(ValueError, match="rotary_dim"):
        MambaLMHeadModel.from_pretrained(tmp_path / "a")
    write_mamba_ssm(tmp_path / "b", ref, ssm_cfg={"d_state": 4, "headdim": 8})
    with pytest.raises(ValueError, match="headdim"):
        MambaLMHeadModel.from_pretrained(tmp_path / "b")
    write_mamba_ssm(tmp_path / "c", ref, ssm_cfg={"d_state": 4, "layer": "Mamba2"})
    with pytest.raises(ValueError, match="Mamba1"):
        MambaLMHeadModel.from_pretrained(tmp_path / "c")
    write_mamba_ssm(tmp_path / "d", ref, ssm_cfg={"d_state": 4})
    sd = torch.load(tmp_path / "d" / "pytorch_model.bin", weights_only=True)
    sd["backbone.layers.0.mixer.rotary.weight"] = torch.zeros(2)
    del sd["backbone.layers.1.mixer.D"]
    torch.save(sd, tmp_path / "d" / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"unknown weights \['backbone.layers.0.mixer.rotary.weight'\]"):
        MambaLMHeadModel.from_pretrained(tmp_path / "d")
    del sd["backbone.layers.0.mixer.rotary.weight"]
    torch.save(sd, tmp_path / "d" / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"lacks weights \['backbone.layers.1.mixer.D'\]"):
        MambaLMHeadModel.from_pretrained(tmp_path / "d")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "config.json").write_text(json.dumps({"model_type": "mamba2", "hidden_size": 8}))
    with pytest.raises(ValueError, match="mamba2"):
        load_pretrained(tmp_path / "e")
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "config.json").write_text(json.dumps({"model_type": "mamba", "hidden_size": 8,
                                                            "num_hidden_layers": 1, "vocab_size": 4, "moe": 2}))
    with pytest.raises(ValueError, match="moe"):
        load_pretrained(tmp_path / "f")
