"""Mamba checkpoints from other projects: loading mamba-ssm and Hugging Face ``transformers`` folders, and
exporting a mambaseq LM to the ``transformers`` format.

``MambaLMHeadModel.from_pretrained(folder)`` (and every other architecture's) recognises the folder by its
``config.json``:

* mambaseq: an ``architecture`` key (``save_pretrained``);
* transformers ``MambaForCausalLM``: ``model_type: "mamba"``; weights in ``model.safetensors`` (or its
  sharded index, or ``pytorch_model.bin``), parameter names ``backbone.embeddings.*``, ``backbone.layers.*``;
* mamba-ssm (``MambaLMHeadModel.save_pretrained``): ``d_model, n_layer, vocab_size, ssm_cfg, rms_norm,
  residual_in_fp32, fused_add_norm, pad_vocab_size_multiple``; weights in ``pytorch_model.bin``.

Pickled ``.bin`` files are read with ``torch.load(weights_only=True)``: tensors only, never arbitrary code.
Both projects' Mamba-1 parameter names are mambaseq's (the block is a drop-in), except transformers'
``embeddings`` for ``embedding``. Config keys and weight names that are not understood are named in the
error instead of being ignored; ``residual_in_fp32`` / ``fused_add_norm`` change only low-precision numerics
(mambaseq keeps the residual in the model's dtype).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mambaseq.config import CONFIG_NAME, WEIGHTS_NAME, MambaConfig
from mambaseq.fileio import atomic_path, missing_config, write_json

FORMATS = ("mambaseq", "transformers", "mamba_ssm")

# transformers MambaConfig key -> MambaConfig field
HF_FIELDS = {"hidden_size": "d_model", "num_hidden_layers": "n_layer", "vocab_size": "vocab_size",
             "state_size": "d_state", "conv_kernel": "d_conv", "expand": "expand", "time_step_rank": "dt_rank",
             "time_step_min": "dt_min", "time_step_max": "dt_max", "time_step_floor": "dt_init_floor",
             "use_bias": "bias", "use_conv_bias": "conv_bias", "layer_norm_epsilon": "norm_eps",
             "tie_word_embeddings": "tie_embeddings"}
# keys that do not change the forward pass in fp32 (initialisation, generation, bookkeeping)
HF_IGNORED = {"architectures", "model_type", "intermediate_size", "hidden_act", "bos_token_id", "eos_token_id",
              "pad_token_id", "dtype", "torch_dtype", "transformers_version", "_name_or_path", "initializer_range",
              "rescale_prenorm_residual", "residual_in_fp32", "time_step_init_scheme", "time_step_scale",
              "use_cache", "use_mambapy", "use_associative_scan", "output_hidden_states", "return_dict",
              "n_layer"}
# mamba-ssm MambaConfig / ssm_cfg keys -> MambaConfig field
SSM_FIELDS = {"d_model": "d_model", "n_layer": "n_layer", "vocab_size": "vocab_size",
              "pad_vocab_size_multiple": "pad_vocab_size_multiple", "tie_embeddings": "tie_embeddings"}
SSM_IGNORED = {"ssm_cfg", "rms_norm", "residual_in_fp32", "fused_add_norm", "d_intermediate", "attn_layer_idx",
               "attn_cfg"}
SSM_CFG_FIELDS = {k: k for k in ("d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init_floor",
                                 "conv_bias", "bias")}
SSM_CFG_IGNORED = {"dt_init", "dt_scale", "use_fast_path", "layer"}


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """config.json of a checkpoint folder as a dict. Raises FileNotFoundError / ValueError (bad JSON)."""
    path = Path(directory) / CONFIG_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise missing_config(path) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def checkpoint_format(directory: str | os.PathLike) -> str:
    """'mambaseq' | 'transformers' | 'mamba_ssm' from the folder's config.json; ValueError if none fits."""
    cfg = read_config(directory)
    if "architecture" in cfg:
        return "mambaseq"
    if "model_type" in cfg or "architectures" in cfg:
        if cfg.get("model_type") != "mamba":
            raise ValueError(f"{directory}: transformers model_type {cfg.get('model_type')!r} "
                             f"({cfg.get('architectures')}) is not supported; only 'mamba' (MambaForCausalLM)")
        return "transformers"
    if {"d_model", "n_layer", "vocab_size"} <= cfg.keys():
        return "mamba_ssm"
    raise ValueError(f"{directory}/{CONFIG_NAME}: not a mambaseq, mamba-ssm or transformers Mamba config "
                     f"(keys {sorted(cfg)})")


def _unknown(where: str, keys: set[str]) -> None:
    if keys:
        raise ValueError(f"{where}: unknown config keys {sorted(keys)}; they may change the model, so mambaseq "
                         f"does not guess")


def config_from_transformers(d: dict[str, Any], where: str = CONFIG_NAME) -> MambaConfig:
    """transformers ``MambaConfig`` dict -> MambaConfig (vocabulary unpadded, as transformers stores it)."""
    _unknown(where, set(d) - HF_FIELDS.keys() - HF_IGNORED)
    if d.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{where}: hidden_act={d['hidden_act']!r}; Mamba uses 'silu'")
    kw = {HF_FIELDS[k]: v for k, v in d.items() if k in HF_FIELDS}
    cfg = MambaConfig(**kw, pad_vocab_size_multiple=1)
    if "intermediate_size" in d and d["intermediate_size"] != cfg.d_inner:
        raise ValueError(f"{where}: intermediate_size={d['intermediate_size']} != expand * hidden_size = {cfg.d_inner}")
    return cfg


def config_from_mamba_ssm(d: dict[str, Any], where: str = CONFIG_NAME) -> MambaConfig:
    """mamba-ssm ``MambaConfig`` dict (Mamba-1 layers only) -> MambaConfig."""
    _unknown(where, set(d) - SSM_FIELDS.keys() - SSM_IGNORED)
    ssm = dict(d.get("ssm_cfg") or {})
    _unknown(f"{where} ssm_cfg", set(ssm) - SSM_CFG_FIELDS.keys() - SSM_CFG_IGNORED)
    if ssm.get("layer", "Mamba1") != "Mamba1":
        raise ValueError(f"{where}: ssm_cfg.layer={ssm['layer']!r}; only Mamba1 layers are supported")
    if d.get("d_intermediate", 0) or d.get("attn_layer_idx"):
        raise ValueError(f"{where}: MLP (d_intermediate) and attention (attn_layer_idx) layers are not supported")
    kw = {SSM_FIELDS[k]: v for k, v in d.items() if k in SSM_FIELDS}
    kw.update({SSM_CFG_FIELDS[k]: v for k, v in ssm.items() if k in SSM_CFG_FIELDS})
    return MambaConfig(**kw, norm="rms" if d.get("rms_norm", True) else "layer")


def _load_weights(directory: Path, names: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], Path]:
    """The first weights file of ``names`` present -> (state dict on CPU, path)."""
    for name in names:
        p = directory / name
        if not p.is_file():
            continue
        if name.endswith(".index.json"):  # sharded safetensors: {"weight_map": {tensor: shard file}}
            shards = sorted(set(json.loads(p.read_text())["weight_map"].values()))
            return {k: v for s in shards for k, v in load_file(str(directory / s)).items()}, p
        if name.endswith(".safetensors"):
            return load_file(str(p)), p
        return torch.load(p, map_location="cpu", weights_only=True), p  # tensors only, no code
    raise FileNotFoundError(f"{directory}: no weights file (looked for {', '.join(names)})")


def load_foreign(cls: type[nn.Module], directory: str | os.PathLike, fmt: str, map_location: str = "cpu",
                 **overrides: Any) -> nn.Module:
    """Build ``cls`` (a mambaseq architecture) from a transformers / mamba-ssm folder.

    ``overrides`` change config fields (e.g. ``num_labels=2`` for a classifier: the backbone is loaded, the new
    head is fresh; ``rc_equivariant=True``). Raises ValueError naming unknown, missing or mis-shaped weights."""
    d = Path(directory)
    raw = read_config(d)
    if fmt == "transformers":
        cfg = config_from_transformers(raw, str(d / CONFIG_NAME))
        sd, wpath = _load_weights(d, ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"))
        sd = {k.replace("backbone.embeddings.", "backbone.embedding.", 1): v for k, v in sd.items()}
    elif fmt == "mamba_ssm":
        cfg = config_from_mamba_ssm(raw, str(d / CONFIG_NAME))
        sd, wpath = _load_weights(d, ("pytorch_model.bin", "model.safetensors"))
    else:
        raise ValueError(f"load_foreign: format must be 'transformers' or 'mamba_ssm', got {fmt!r}")
    model = cls(cfg.updated(**overrides))
    want = model.state_dict()
    tied = getattr(model, "lm_head", None) is not None and model.lm_head.weight is model.backbone.embedding.weight
    if "lm_head.weight" in sd and (tied or "lm_head.weight" not in want):
        head = sd.pop("lm_head.weight")  # tied to (or, for a classifier, not part of) this model
        if tied and not torch.equal(head, sd.get("backbone.embedding.weight", head)):
            raise ValueError(f"{wpath}: lm_head.weight differs from the embedding but the config ties them")
    unknown = sorted(set(sd) - set(want))
    if unknown:
        raise ValueError(f"{wpath}: unknown weights {unknown[:10]}{' ...' if len(unknown) > 10 else ''} "
                         f"({len(unknown)} in all) for {cls.__name__}")
    fresh_ok = () if cls.__name__ == "MambaLMHeadModel" else ("head.", "pool_norm.")  # a classifier's new head
    missing = [k for k in want if k not in sd and not k.startswith(fresh_ok) and not (tied and k == "lm_head.weight")]
    if missing:
        raise ValueError(f"{wpath}: checkpoint lacks weights {missing[:10]} ({len(missing)} in all)")
    bad = [f"{k} {tuple(v.shape)} vs {tuple(want[k].shape)}" for k, v in sd.items() if v.shape != want[k].shape]
    if bad:
        raise ValueError(f"{wpath}: weight shapes differ from config.json's model: {bad[:5]}")
    model.load_state_dict(sd, strict=False)
    return model.to(map_location)


def save_transformers(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write a mambaseq ``MambaLMHeadModel`` as a transformers ``MambaForCausalLM`` folder (config.json +
    model.safetensors), loadable with ``transformers.MambaForCausalLM.from_pretrained(directory)``.

    The vocabulary is written unpadded (``vocab_size`` rows), so transformers' logits equal this model's.
    Raises ValueError for what transformers' Mamba cannot express: complex SSMs, LayerNorm, bidirectional or
    RC-equivariant backbones, other architectures."""
    cfg: MambaConfig = model.cfg
    if type(model).__name__ != "MambaLMHeadModel":
        raise ValueError(f"save_transformers exports a MambaLMHeadModel, got {type(model).__name__}")
    if cfg.complex or cfg.norm != "rms":
        raise ValueError("transformers' Mamba has real SSMs and RMSNorm only "
                         f"(this model: complex={cfg.complex}, norm={cfg.norm!r})")
    V = cfg.vocab_size
    sd = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight" and cfg.tie_embeddings:
            continue  # transformers re-ties it to the embedding
        if k in ("backbone.embedding.weight", "lm_head.weight"):
            v = v[:V]
        sd[k.replace("backbone.embedding.", "backbone.embeddings.", 1)] = v.detach().cpu().contiguous()
    hf = {"architectures": ["MambaForCausalLM"], "model_type": "mamba", "hidden_act": "silu",
          "intermediate_size": cfg.d_inner, "residual_in_fp32": True,
          **{hf_key: getattr(cfg, field) for hf_key, field in HF_FIELDS.items()}}
    d = Path(directory)
    with atomic_path(d / WEIGHTS_NAME) as tmp:
        save_file(sd, str(tmp), metadata={"format": "pt"})
    write_json(hf, d / CONFIG_NAME)
    return d
