"""Checkpoints and the architecture registry: one home for saving, loading and building every model.

A checkpoint folder describes itself: ``config.json`` (the model's config fields plus ``architecture``, the
class name) and ``model.safetensors``. Every model class inherits ``PretrainedMixin`` and is registered by
name (``@register_architecture``), so one loader rebuilds any of them:

    model.save_pretrained("ckpt/")                      # any registered model
    model = load_pretrained("ckpt/")                    # the class named in ckpt/config.json
    clf = MambaForSequenceClassification.from_pretrained("lm_ckpt/", num_labels=5)  # LM -> classifier
    model = build_model("SaShiMiLM", {"d_model": 64, "pool": [4, 4]})             # a fresh model by name

The registry holds ``MambaLMHeadModel``, ``MambaForSequenceClassification`` (``mambaseq.model``),
``MambaForMaskedLM`` (``mambaseq.masked_lm``) and ``SaShiMiLM`` (``mambaseq.sashimi``); ``import mambaseq``
(which any ``mambaseq.*`` import runs first) imports all of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch.nn as nn
from safetensors.torch import save_model

from mambaseq.config import CONFIG_NAME, WEIGHTS_NAME, ConfigFile, MambaConfig
from mambaseq.fileio import atomic_path, load_weights, missing_config, read_json
from mambaseq.hf_compat import checkpoint_format, load_foreign

ARCHITECTURES: dict[str, type[nn.Module]] = {}


def register_architecture(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: make ``cls`` (a ``PretrainedMixin`` model with a ``config_class``) loadable and
    buildable by its name. Raises ValueError if another class already has the name."""
    if not isinstance(getattr(cls, "config_class", None), type):
        raise ValueError(f"{cls.__name__}: a registered architecture needs a config_class")
    if ARCHITECTURES.get(cls.__name__, cls) is not cls:
        raise ValueError(f"architecture {cls.__name__!r} is already registered")
    ARCHITECTURES[cls.__name__] = cls
    return cls


def architecture_class(name: str) -> type[nn.Module]:
    """The model class registered as ``name`` (e.g. ``"SaShiMiLM"``). Raises ValueError listing the known
    names."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` with config.json + model.safetensors, written atomically.

    A model class sets ``config_class`` (the dataclass its constructor takes as its only argument, stored as
    ``self.cfg``) and ``shared_prefix``: the state-dict prefix that another architecture with the same config
    class may load into this one (``"backbone."``: an LM checkpoint starts a classifier, whose new head is
    freshly initialised), or ``None`` if only checkpoints of this very class load."""

    config_class: ClassVar[type[ConfigFile]]
    shared_prefix: ClassVar[str | None] = None
    cfg: ConfigFile

    def save_pretrained(self, directory: str | os.PathLike, **meta: Any) -> Path:
        """Write ``directory``/config.json and model.safetensors (each to a temporary file, then renamed);
        returns the directory. ``meta``: extra config.json keys among ``mambaseq.config.METADATA_KEYS``
        (ValueError otherwise, before anything is written)."""
        d = Path(directory)
        # the weights are renamed into place first, config.json last (the inner block ends first)
        with atomic_path(d / CONFIG_NAME) as cfg_tmp, atomic_path(d / WEIGHTS_NAME) as w_tmp:
            self.cfg.save(cfg_tmp, architecture=type(self).__name__, **meta)
            save_model(self, str(w_tmp))  # handles the tied embedding / head weights
        return d

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str = "cpu", **overrides: Any):
        """Load a checkpoint directory as ``cls``. ``overrides`` change config fields (e.g. ``num_labels=5``
        to start a classifier from a pretrained LM: the backbone is loaded, the new head is freshly
        initialised). mamba-ssm and transformers Mamba folders are recognised too (``mambaseq.hf_compat``).

        Raises FileNotFoundError (no config.json / weights), ``mambaseq.fileio.CorruptFileError`` (damaged
        files, naming them), or ValueError naming the file: unknown config keys or values, a checkpoint of
        an architecture that cannot load into ``cls``, missing or mis-shaped weights."""
        d = Path(directory)
        fmt = checkpoint_format(d)
        if fmt != "mambaseq":
            if not issubclass(cls.config_class, MambaConfig):
                raise ValueError(f"{d}: a {fmt} Mamba checkpoint cannot be loaded as {cls.__name__}")
            return load_foreign(cls, d, fmt, map_location, **overrides)
        cpath = d / CONFIG_NAME
        arch = read_json(cpath).get("architecture")  # a damaged file: CorruptFileError naming it
        same = arch == cls.__name__
        other = ARCHITECTURES.get(arch)
        if not same and (cls.shared_prefix is None or (other is not None and other.config_class is not cls.config_class)):
            raise ValueError(f"{cpath}: architecture {arch!r}, expected {cls.__name__}")
        cfg, _ = cls.config_class.load(cpath)
        model = cls(cfg.updated(**overrides))
        wpath = d / WEIGHTS_NAME
        missing, _ = load_weights(model, wpath, strict=same, device=map_location)  # errors name wpath
        if not same:  # cross-architecture (LM -> classifier): every shared tensor must have been loaded
            bad = [k for k in missing if k.startswith(cls.shared_prefix)]
            if bad:
                raise ValueError(f"{wpath}: checkpoint lacks {cls.shared_prefix.rstrip('.')} weights {bad[:5]}")
        return model


def load_pretrained(directory: str | os.PathLike, map_location: str = "cpu", **overrides: Any) -> nn.Module:
    """Load any checkpoint directory as the architecture recorded in its config.json (a mamba-ssm or
    transformers folder, which records none, as ``MambaLMHeadModel``). ``map_location``: device of the
    weights; ``overrides``: config fields to change (see ``PretrainedMixin.from_pretrained``).

    Raises FileNotFoundError (no config.json), ``CorruptFileError``, or ValueError for an unknown
    architecture (naming the known ones) and everything ``from_pretrained`` rejects."""
    path = Path(directory) / CONFIG_NAME
    try:
        arch = read_json(path).get("architecture")  # a damaged file: CorruptFileError naming it
    except FileNotFoundError:
        raise missing_config(path) from None
    if arch is None and checkpoint_format(directory) != "mambaseq":
        arch = "MambaLMHeadModel"  # a mamba-ssm or transformers causal LM
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path}: unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch].from_pretrained(directory, map_location=map_location, **overrides)


def build_model(architecture: str, config: ConfigFile | Mapping[str, Any] | None = None, **fields: Any) -> nn.Module:
    """A freshly initialised model of the registered ``architecture``.

    ``config``: an instance of the architecture's ``config_class`` (``MambaConfig``, ``SaShiMiConfig``), or
    a mapping of its fields (a Hydra node, a config.json without ``architecture``), or None for the
    defaults; ``fields`` override single fields. Example::

        build_model("MambaForSequenceClassification", MambaConfig.from_name("small", num_labels=5))
        build_model("SaShiMiLM", {"d_model": 64, "pool": [4, 4]}, vocab_size=256)

    Raises ValueError for an unknown architecture or field (naming it, with the closest field name), or a
    value the config rejects; TypeError for a config of another class."""
    cls = architecture_class(architecture)
    if config is None or isinstance(config, Mapping):
        cfg = cls.config_class.from_dict({**dict(config or {}), **fields})
    elif isinstance(config, cls.config_class):
        cfg = config.updated(**fields) if fields else config
    else:
        raise TypeError(f"{architecture} takes a {cls.config_class.__name__} (or a mapping of its fields), got "
                        f"{type(config).__name__}")
    return cls(cfg)
