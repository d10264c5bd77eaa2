"""Configs and inputs are checked up front, by name (issue 14, kind 7): MambaConfig fields (d_conv's
supported widths), unknown config.json keys, TrainConfig and pipeline settings, token ids outside the
vocabulary, and the CLI's one-line configuration errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mambaseq import MambaConfig, MambaLMHeadModel, cli
from mambaseq.model import MambaForSequenceClassification
from mambaseq.pipelines import apes, audio, pretrain
from mambaseq.sashimi import SaShiMiConfig, SaShiMiLM
from mambaseq.settings import ConfigError
from mambaseq.training import TrainConfig
from seeding import rng_for, seed_for

BAD_VALUES = [0, -3, 2.5, "4", None, True, float("nan"), float("inf"), []]


# ----------------------------------------------------------------------------- MambaConfig
@pytest.mark.parametrize("d_conv", [-1, 0, 1, 9, 16])
def test_unsupported_conv_width_rejected_at_construction(d_conv):
    """The kernels support widths 2..8 (the case `dconv_width.py`: 5 runs); others fail at construction."""
    with pytest.raises(ValueError, match=rf"MambaConfig.d_conv must be in 2..8.*got {d_conv}|d_conv must be a "
                                         rf"positive int"):
        MambaConfig.from_name("debug", vocab_size=10, d_conv=d_conv)


@pytest.mark.parametrize("d_conv", [2, 3, 4, 5, 8])
def test_supported_conv_widths_run(request, d_conv):
    torch.manual_seed(seed_for(request))
    lm = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=10, d_conv=d_conv)).eval()
    assert lm(torch.randint(0, 10, (1, 8))).shape == (1, 8, 10)
    seqs = lm.generate(torch.randint(0, 10, (2, 3)), max_new_tokens=6)  # the recurrent step keeps d_conv inputs
    with torch.no_grad():
        logits = lm(seqs[:, :-1])[:, 2:]
    chosen = logits.gather(-1, seqs[:, 3:, None]).squeeze(-1)
    assert float((logits.max(-1).values - chosen).max()) < 1e-4  # greedy tokens are the parallel argmax


FIELD_VALUES = {
    "d_model": [8, 16, *BAD_VALUES], "n_layer": [1, 2, *BAD_VALUES], "vocab_size": [1, 5, 300, *BAD_VALUES],
    "d_state": [1, 4, *BAD_VALUES], "d_conv": [2, 3, 4, 8, 9, *BAD_VALUES], "expand": [1, 2, *BAD_VALUES],
    "dt_rank": ["auto", 1, 3, "big", *BAD_VALUES], "dt_min": [1e-3, 0.05, *BAD_VALUES], "dt_max": [0.1, 0.2, *BAD_VALUES],
    "dt_init_floor": [1e-4, *BAD_VALUES], "norm_eps": [1e-5, 1e-6, *BAD_VALUES], "norm": ["rms", "layer", "batch", 1],
    "conv_bias": [True, False, 1, "yes"], "bias": [True, False, 0, None], "complex": [True, False, "true"],
    "tie_embeddings": [True, False, 1], "pad_vocab_size_multiple": [1, 8, *BAD_VALUES],
    "backend": ["auto", "reference", "cuda", None], "num_labels": [0, 3, -1, 2.0, True],
    "pooling": ["last", "mean", "max"], "checkpoint_activations": [True, False, "no"],
}


def test_random_model_configs_build_or_name_the_field(request):
    """Property (120 configs, one random field value each on the debug size): either ValueError naming
    ``MambaConfig.<field>``, or a model whose forward and step run and agree in shape."""
    rng = rng_for(request)
    torch.manual_seed(seed_for(request))  # the models' initial weights
    names = sorted(FIELD_VALUES)
    for _ in range(120):
        name = names[int(rng.integers(len(names)))]
        value = FIELD_VALUES[name][int(rng.integers(len(FIELD_VALUES[name])))]
        try:
            cfg = MambaConfig.from_name("debug", **{"vocab_size": 10, name: value})
        except ValueError as e:
            assert f"MambaConfig.{name}" in str(e) or (name in ("dt_min", "dt_max") and "dt_min <= dt_max" in str(e)), \
                (name, value, str(e))
            continue
        if name == "num_labels" and value:
            assert MambaForSequenceClassification(cfg)(torch.zeros(2, 5, dtype=torch.long)).shape == (2, value)
            continue
        lm = MambaLMHeadModel(cfg)
        ids = torch.from_numpy(rng.integers(0, cfg.vocab_size, (2, 5)))
        assert lm(ids).shape == (2, 5, cfg.vocab_size) and torch.isfinite(lm(ids)).all(), (name, value)
        cache = lm.allocate_inference_cache(2)
        assert lm.step(ids[:, 0], cache).shape == (2, cfg.vocab_size)


@pytest.mark.parametrize("key,fixed", [("n_layers", "n_layer"), ("ssm_cfg", None), ("d_modle", "d_model"),
                                       ("Vocab_size", "vocab_size")])
def test_unknown_config_json_keys_are_named(tmp_path, key, fixed):
    """The case `config_unknown_keys.py` and its kind: typos and other projects' keys."""
    d = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=10)).save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((d / "config.json").read_text())
    if fixed:
        cfg[key] = cfg.pop(fixed)
    else:
        cfg[key] = {"d_state": 16}  # mamba-ssm's config.json
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=key) as ei:
        MambaLMHeadModel.from_pretrained(d)
    assert str(d / "config.json") in str(ei.value)
    if fixed:
        assert f"did you mean {fixed!r}" in str(ei.value)


def test_save_rejects_metadata_that_load_would_reject(tmp_path):
    with pytest.raises(ValueError, match="metadata keys"):
        MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=10)).save_pretrained(tmp_path, n_layers=3)


# ----------------------------------------------------------------------------- token ids
@pytest.mark.parametrize("model_name", ["lm", "sashimi"])
def test_random_token_ids_in_range_or_value_error(request, model_name):
    """Property (60 id tensors per model, from -3 to past the padded vocabulary): forward and step accept
    exactly the ids in [0, vocab_size) and otherwise raise ValueError naming the range."""
    if model_name == "lm":
        model = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=10))  # padded to 16 rows
        vocab = 10
    else:
        model = SaShiMiLM(SaShiMiConfig(d_model=8, n_layer=1, pool=(2,), d_state=4, vocab_size=12))
        vocab = 12
    rng = rng_for(request)
    for _ in range(60):
        b, L = int(rng.integers(1, 3)), 2 * int(rng.integers(1, 4))
        ids = torch.from_numpy(rng.integers(0, vocab, (b, L)))
        if rng.random() < 0.5:
            ids[int(rng.integers(b)), int(rng.integers(L))] = int(rng.choice([-3, -1, vocab, vocab + 1, 16, 1000]))
        ok = bool(((ids >= 0) & (ids < vocab)).all())
        cache = model.allocate_inference_cache(b)
        for call in (lambda: model(ids), lambda: model.step(ids[:, -1] if ok else ids.flatten()[:b], cache)):
            if ok:
                call()
            else:
                with pytest.raises(ValueError, match=rf"input_ids must lie in \[0, {vocab - 1}\]"):
                    model(ids)
    with pytest.raises(ValueError, match="must lie in"):
        model.step(torch.full((1,), vocab), model.allocate_inference_cache(1))


# ----------------------------------------------------------------------------- TrainConfig and pipelines
def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


TRAIN_FIELDS = {  # field -> (a valid value, the test's own statement of validity)
    "max_steps": (10, lambda v: type(v) is int and v >= 1), "batch_size": (8, lambda v: type(v) is int and v >= 1),
    "seq_len": (64, lambda v: type(v) is int and v >= 1), "log_every": (1, lambda v: type(v) is int and v >= 1),
    "warmup_steps": (5, lambda v: type(v) is int and v >= 0), "ckpt_every": (5, lambda v: type(v) is int and v >= 0),
    "keep_last": (2, lambda v: type(v) is int and v >= 0), "lr": (1e-3, lambda v: _is_num(v) and v > 0),
    "grad_clip": (1.0, lambda v: _is_num(v) and v >= 0), "max_time_s": (1.5, lambda v: _is_num(v) and v >= 0),
    "seq_len_warmup": (True, lambda v: isinstance(v, bool)), "progress": (False, lambda v: isinstance(v, bool)),
}


def test_random_train_configs_name_the_field(request):
    """Property (150 TrainConfigs with one random field value): ValueError naming ``train.<field>`` exactly
    when the value is invalid."""
    rng = rng_for(request)
    names = sorted(TRAIN_FIELDS)
    for _ in range(150):
        name = names[int(rng.integers(len(names)))]
        good, valid = TRAIN_FIELDS[name]
        pool = [good, *BAD_VALUES]
        value = pool[int(rng.integers(len(pool)))]
        if valid(value):
            TrainConfig(**{name: value})
        else:
            with pytest.raises(ValueError, match=rf"train\.{name}"):
                TrainConfig(**{name: value})


@pytest.mark.parametrize("module,keys", [
    (pretrain, ["data.seq_len", "data.region_size", "train.batch_size", "train.lr", "generate.top_p",
                "eval.batch_tokens", "data.seq_lens", "data.tokens_per_step"]),
    (apes, ["data.seq_len", "data.seq_lens", "train.max_steps", "data.rc_augment"]),
    (audio, ["generate.n_samples", "generate.temperature", "train.batch_size", "classifier.lr"]),
], ids=["pretrain", "apes", "audio"])
def test_bad_pipeline_settings_named_at_load(request, module, keys):
    """Property (10 random bad values per key): load_config raises ConfigError naming the key."""
    rng = rng_for(request)
    for key in keys:
        for _ in range(10):
            bad = ["-5", "0", "abc", "2.5", "null", "[]", "[1,-1]", "true"][int(rng.integers(8))]
            if bad == "null" and key in ("data.seq_lens", "data.tokens_per_step"):
                continue  # null is valid there
            if bad == "2.5" and key in ("train.lr", "generate.temperature", "classifier.lr"):
                continue
            if bad == "true" and key == "data.rc_augment" or bad in ("0", "-5") and key == "data.rc_augment":
                bad = "3"
            with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')}[=:]"):
                module.load_config([f"{key}={bad}"])


def test_negative_seq_len_rejected_before_anything_is_written(tmp_path):
    """The case `pretrain_negative_seq_len.py` through the real console script: one line naming the key,
    exit status 2, no run directory."""
    exe = Path(sys.executable).with_name("mambaseq")
    p = subprocess.run([str(exe), "pretrain", "train", f"data.store={tmp_path / 'none'}", f"out_dir={tmp_path / 'runs'}",
                        "data.seq_len=-5", "train.max_steps=1"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [p.stderr.strip()]
    assert p.stderr.startswith("error: data.seq_len=-5: must be an integer >= 1")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override", ["data.seq_lenn=3", "model=nonexistent", "data.seq_len=[", "+=3"])
def test_hydra_override_errors_are_one_line(capsys, override):
    assert cli.main(["pretrain", "show-config", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    with pytest.raises(Exception):  # -v: the traceback
        cli.main(["-v", "pretrain", "show-config", override])


def test_user_errors_found_while_running_are_one_line(capsys):
    """A missing file or checkpoint found while a command runs (evaluate before train) prints one line naming
    it and returns 2; -v raises it with its traceback; any other exception is not swallowed."""
    assert cli.main(["pretrain", "evaluate", "data.store=/nonexistent/store"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "/nonexistent/store" in err[0], err
    with pytest.raises(FileNotFoundError):
        cli.main(["-v", "pretrain", "evaluate", "data.store=/nonexistent/store"])


def test_other_errors_still_raise(monkeypatch):
    from mambaseq.pipelines import apes

    def boom(*a, **k):
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(apes, "prepare", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["apes", "evaluate", "out_dir=/nonexistent"])


@pytest.mark.parametrize("overrides,expected", [
    (["data.source=fasta", "data.fasta={human:/nonexistent/hg38.fa.gz}", "data.test_chroms=[chr22]"],
     "data.fasta.human=/nonexistent/hg38.fa.gz: no such file"),
    (["data.source=fasta", "data.fasta={human:null}", "data.test_chroms=[chr22]"],
     "data.fasta.human=null: no file given"),
    (["data.max_n_fraction=2"], "data.max_n_fraction=2: must be a number in [0, 1]"),
    (["data.fractions=[0.5,0.6,0.1]"], "data.fractions=[0.5, 0.6, 0.1]: must be three train/val/test fractions"),
    (["data.fractions=[0.5,0.5]"], "data.fractions=[0.5, 0.5]: must be three"),
    (["data.store=/nonexistent/store"], "data.store=/nonexistent/store: no such folder"),
    (["data.source=genbank"], "data.source must be one of"),
], ids=["missing-fasta", "null-fasta", "max-n-fraction", "fractions-sum", "fractions-two", "store", "source"])
def test_apes_data_settings_are_one_line_errors(tmp_path, capsys, overrides, expected):
    """Data settings that used to fail with a traceback from inside data preparation (new-user trial,
    issue 2) are checked before anything is prepared: one line naming the key, exit status 2, nothing
    written; show-config of a recipe whose files are still to be downloaded works."""
    assert cli.main(["apes", "run", f"out_dir={tmp_path}/runs", f"data.out_root={tmp_path}/data", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {expected}") and "\n" not in err
    assert not any(tmp_path.iterdir())


def test_show_config_of_a_recipe_without_its_files(capsys):
    assert cli.main(["apes", "show-config", "experiment=apes_genomes_gpu"]) == 0
    assert "human: null" in capsys.readouterr().out


@pytest.mark.parametrize("override, msg", [
    ("data.seq_lenn=1024", r"did you mean data.seq_len\?"),
    ("+data.seq_lenn=1024", r"\+data.seq_lenn: data has no setting 'seq_lenn' \(did you mean data.seq_len\?\)"),
    ("+seq_lenn=3", r"\+seq_lenn: apes has no setting 'seq_lenn'"),
], ids=["typo", "plus-typo", "plus-top-level"])
def test_a_typo_is_refused_with_the_closest_setting(override, msg):
    """Hydra's own advice for a typo ('use +key=value') would add an unused key silently: '+' is refused for a
    key that is not a setting, and both errors name the closest setting."""
    from mambaseq.settings import ConfigError, compose

    with pytest.raises(ConfigError, match=msg):
        compose("apes", [override])


def test_plus_still_adds_species_files_and_model_fields():
    from mambaseq.settings import compose

    assert compose("apes", ["+data.fasta.human=/x/hg38.fa.gz"])["data"]["fasta"] == {"human": "/x/hg38.fa.gz"}
    assert compose("pretrain", ["model=small", "+model.n_layer=6"])["model"]["n_layer"] == 6
