"""Up-front checks of run settings (composed Hydra configs as nested dicts), by dotted key.

A pipeline lists the settings it relies on with a rule each, e.g. ``{"data.seq_len": "int>=1"}``, and calls
``check_settings`` before it creates any directory or file, so ``data.seq_len=-5`` fails at once with the
key named instead of deep inside the trainer after the run folder exists.

Rules: ``int>=N``, ``float>N`` / ``float>=N`` (ints accepted), ``prob`` (0 < x <= 1), ``bool``; a trailing
``|null`` also accepts None; ``[int>=1]`` (optionally ``|null``) is a list of such values.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

_RULE = re.compile(r"^(int|float)(>=|>)(-?[\d.]+)$")


class ConfigError(ValueError):
    """A run setting with a bad value; the message starts with its dotted key (e.g. ``data.seq_len``)."""


def compose(config_name: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose ``mambaseq/configs/<config_name>.yaml`` with Hydra ``overrides`` -> plain nested dict
    (interpolations resolved). Any failure to parse or apply an override is a ConfigError carrying Hydra's
    message (Hydra raises several exception types for these)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    try:
        with initialize_config_module(config_module="mambaseq.configs", version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception as e:
        raise ConfigError(f"{config_name} config with overrides {list(overrides)}: {e}") from e


def get(cfg: Mapping[str, Any], key: str) -> Any:
    """``cfg["a"]["b"]`` for ``key = "a.b"``; ConfigError naming the key if it is missing."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"{key}: missing setting")
        node = node[part]
    return node


def _ok(value: Any, rule: str) -> bool:
    if rule == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if rule == "prob":
        return 0 < value <= 1
    m = _RULE.match(rule)
    if m is None:
        raise ValueError(f"unknown settings rule {rule!r}")
    kind, op, bound = m.group(1), m.group(2), float(m.group(3))
    if kind == "int" and not isinstance(value, int):
        return False
    if not math.isfinite(value):
        return False
    return value >= bound if op == ">=" else value > bound


def _describe(rule: str) -> str:
    base = rule.removesuffix("|null")
    text = {"bool": "true or false", "prob": "a number in (0, 1]"}.get(base.strip("[]"))
    if text is None:
        m = _RULE.match(base.strip("[]"))
        text = f"{'an integer' if m.group(1) == 'int' else 'a number'} {m.group(2)} {m.group(3)}"
    if base.startswith("["):
        text = f"a non-empty list of values each {text}"
    return text + (" (or null)" if rule.endswith("|null") else "")


def check_settings(cfg: Mapping[str, Any], rules: Mapping[str, str]) -> None:
    """Raise ConfigError for the first setting that breaks its rule: ``"data.seq_len=-5: must be an integer
    >= 1"``. Nothing is read or written besides ``cfg``."""
    for key, rule in rules.items():
        value = get(cfg, key)
        base = rule.removesuffix("|null")
        if value is None and rule.endswith("|null"):
            continue
        if base.startswith("["):
            good = isinstance(value, (list, tuple)) and len(value) > 0 and all(_ok(v, base[1:-1]) for v in value)
        else:
            good = _ok(value, base)
        if not good:
            raise ConfigError(f"{key}={value!r}: must be {_describe(rule)}")
