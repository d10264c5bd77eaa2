"""Up-front checks of run settings (composed Hydra configs as nested dicts), by dotted key.

A pipeline lists the settings it relies on with a rule each, e.g. ``{"data.seq_len": "int>=1"}``, and calls
``check_settings`` before it creates any directory or file, so ``data.seq_len=-5`` fails at once with the
key named instead of deep inside the trainer after the run folder exists.

Rules: ``int>=N``, ``float>N`` / ``float>=N`` (ints accepted), ``prob`` (0 < x <= 1), ``fraction``
(0 <= x <= 1), ``bool``; a trailing ``|null`` also accepts None; ``[int>=1]`` (optionally ``|null``) is a list
of such values. ``fractions``: three train/val/test shares >= 0 summing to 1. ``file`` / ``dir``: an existing
file / folder, or a list of them, or {name: path or paths} (each path checked; the error names the entry).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

_RULE = re.compile(r"^(int|float)(>=|>)(-?[\d.]+)$")


class ConfigError(ValueError):
    """A run setting with a bad value; the message starts with its dotted key (e.g. ``data.seq_len``)."""


_CHOICE = re.compile(r"^(?:\+\+|\+)?(\w+)=([\w.-]+)$")


def group_options(group: str) -> list[str]:
    """The choices of config group ``group`` (``model`` -> debug, tiny, ...): its YAML files, less the
    ``_``-prefixed ones, which other files include (``model/_options.yaml``) and are not choices."""
    import mambaseq.configs

    folder = Path(mambaseq.configs.__file__).parent / group
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))


def group_choices(overrides: Sequence[str]) -> dict[str, str]:
    """{group: choice} of the overrides that pick a config group option (``model=small``,
    ``experiment=apes_gpu``); ConfigError listing the options when a choice is not one."""
    out = {}
    for o in overrides:
        m = _CHOICE.match(o)
        if m is None or m.group(2) == "null":
            continue
        group, choice = m.groups()
        options = group_options(group)
        if options and choice not in options:
            raise ConfigError(f"{group}={choice}: not a {group} option; choose one of {', '.join(options)}")
        if options:
            out[group] = choice
    return out


def compose(config_name: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose ``mambaseq/configs/<config_name>.yaml`` with Hydra ``overrides`` -> plain nested dict
    (interpolations resolved). A group choice that is not an option (``model=_options``, a typo) is a
    ConfigError listing the options; so is any failure to parse or apply an override, carrying Hydra's
    message (Hydra raises several exception types for these)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    groups = group_choices(overrides)

    def _compose(ovr: Sequence[str]) -> dict[str, Any]:
        with initialize_config_module(config_module="mambaseq.configs", version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(ovr))
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]

    try:
        out = _compose(overrides)
    except Exception as e:
        m = re.search(r"Could not override '([^']+)'", str(e))
        hint = _did_you_mean(m.group(1), _compose([f"{g}={c}" for g, c in groups.items()])) if m else ""
        raise ConfigError(f"{config_name} config with overrides {list(overrides)}: {e}{hint}") from e
    added = [o[1:].split("=", 1)[0] for o in overrides if o.startswith("+") and "=" in o and "/" not in o.split("=")[0]]
    if added:  # '+key=value' may only add under FREE_FORM (data.fasta, the model groups), never a typo'd setting
        base = _compose([f"{g}={c}" for g, c in groups.items()])
        for key in added:
            parent, _, leaf = key.rpartition(".")
            node: Any = base
            for part in parent.split(".") if parent else []:
                node = node.get(part) if isinstance(node, Mapping) else None
            if isinstance(node, Mapping) and not any(key == f or key.startswith(f + ".") for f in FREE_FORM):
                raise ConfigError(f"+{key}: {parent or config_name} has no setting {leaf!r}"
                                  f"{_did_you_mean(key, base)}; settings are changed without '+'")
    return out


# '+' may add keys here: data.fasta's species are the user's; a model group lists only some architecture fields
# (the rest come from the named size) and its keys are checked when the model is built
FREE_FORM = ("data.fasta", "model", "audio_model")


def _did_you_mean(key: str, cfg: Mapping[str, Any]) -> str:
    """' (did you mean data.seq_len?)' for the known setting closest to ``key``, or ''."""
    import difflib

    def keys(node: Any, prefix: str = "") -> list[str]:
        if not isinstance(node, Mapping):
            return [prefix[:-1]]
        return [k for name, v in node.items() for k in keys(v, f"{prefix}{name}.")] + ([prefix[:-1]] if prefix else [])

    close = difflib.get_close_matches(key, keys(cfg), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


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
    if rule == "fraction":
        return 0 <= value <= 1
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
    text = {"bool": "true or false", "prob": "a number in (0, 1]", "fraction": "a number in [0, 1]",
            "fractions": "three train/val/test fractions >= 0 summing to 1"}.get(base.strip("[]"))
    if text is None:
        m = _RULE.match(base.strip("[]"))
        text = f"{'an integer' if m.group(1) == 'int' else 'a number'} {m.group(2)} {m.group(3)}"
    if base.startswith("["):
        text = f"a non-empty list of values each {text}"
    return text + (" (or null)" if rule.endswith("|null") else "")


def _fractions_ok(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 3 and all(_ok(v, "float>=0") for v in value)
            and math.isclose(sum(value), 1.0, abs_tol=1e-6))


def _path_problem(key: str, value: Any, kind: str) -> str | None:
    """Why ``value`` (a path, paths, or {name: path(s)}) is not an existing ``kind`` (file | dir), or None."""
    noun = "folder" if kind == "dir" else "file"
    entries = value.items() if isinstance(value, Mapping) else [("", value)]
    if not entries:
        return f"{key}={value!r}: must name at least one {noun}"
    exists = Path.is_file if kind == "file" else Path.is_dir
    for sub, paths in entries:
        name = f"{key}.{sub}" if sub else key
        for p in paths if isinstance(paths, (list, tuple)) and paths else [paths]:
            if p is None:
                return f"{name}=null: no {noun} given"
            if not isinstance(p, str) or not p:
                return f"{name}={p!r}: must be the path of a {noun}"
            if not exists(Path(p)):
                return f"{name}={p}: no such {noun}" + (" (a folder)" if kind == "file" and Path(p).is_dir() else "")
    return None


def check_settings(cfg: Mapping[str, Any], rules: Mapping[str, str]) -> None:
    """Raise ConfigError for the first setting that breaks its rule: ``"data.seq_len=-5: must be an integer
    >= 1"``, ``"data.fasta.human=/x/hg38.fa.gz: no such file"``. Nothing is read or written besides ``cfg``
    (``file`` / ``dir`` rules only look whether the paths exist)."""
    for key, rule in rules.items():
        value = get(cfg, key)
        base = rule.removesuffix("|null")
        if value is None and rule.endswith("|null"):
            continue
        if base in ("file", "dir"):
            problem = _path_problem(key, value, base)
            if problem:
                raise ConfigError(problem)
            continue
        if base == "fractions":
            good = _fractions_ok(value)
        elif base.startswith("["):
            good = isinstance(value, (list, tuple)) and len(value) > 0 and all(_ok(v, base[1:-1]) for v in value)
        else:
            good = _ok(value, base)
        if not good:
            raise ConfigError(f"{key}={value!r}: must be {_describe(rule)}")
