"""The run scaffolding every pipeline shares (mambaseq.runs): the tokens-per-step batch rule, keys that
moved, model construction from a config group, the command line, and the one evaluation loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mambaseq import runs
from mambaseq.pipelines import apes, audio, pretrain
from mambaseq.training.evaluation import (classification_counts, classification_metrics, confusion_pairs, eval_loop,
                                          next_token_bits)
from seeding import rng_for, seed_for
from tolerances import CLOSE


@pytest.mark.parametrize("pipeline", [apes, audio, pretrain], ids=["apes", "audio", "pretrain"])
def test_one_batch_rule_with_one_key(pipeline):
    """data.tokens_per_step sets the batch at every context length, in every pipeline."""
    cfg = pipeline.load_config([])
    assert runs.batch_size(cfg, 1024) == cfg["train"]["batch_size"]
    cfg = pipeline.load_config(["data.tokens_per_step=8192"])
    assert [runs.batch_size(cfg, L) for L in (1024, 4096, 16384)] == [8, 2, 1]
    tc = runs.train_config(cfg, 1024, world_size=2)
    assert tc.batch_size == 4 and tc.seq_len == 1024 and tc.seed == cfg["seed"]
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        runs.train_config(cfg, 1024, world_size=3)


def test_moved_keys_are_read_at_their_new_place():
    with pytest.warns(FutureWarning, match="tokens_per_step is now data.tokens_per_step"):
        cfg = pretrain.load_config(["tokens_per_step=1048576"])
    assert cfg["data"]["tokens_per_step"] == 1048576 and "tokens_per_step" not in cfg
    with pytest.warns(FutureWarning):
        assert runs.rename_moved("++train.seq_len=64") == "++data.seq_len=64"
    assert runs.rename_moved("train.lr=0.1") == "train.lr=0.1"


def test_build_model_from_each_config_group(request):
    torch.manual_seed(seed_for(request))
    assert type(pretrain.build_model(pretrain.load_config(["model=debug"]))).__name__ == "MambaLMHeadModel"
    assert type(pretrain.build_model(pretrain.load_config(["model=debug", "objective=mlm",
                                                           "model.bidirectional=true"]))).__name__ == "MambaForMaskedLM"
    clf = apes.build_model(apes.load_config(["model=debug"]), 5)
    assert type(clf).__name__ == "MambaForSequenceClassification" and clf.cfg.num_labels == 5
    for backbone in ("sashimi", "mamba"):
        lm = audio.build_model(audio.load_config([f"audio_model={backbone}"]))
        assert lm(torch.zeros(1, 16, dtype=torch.long)).shape == (1, 16, 256)
    with pytest.raises(ValueError, match="backbone must be"):
        runs.build_model({"backbone": "transformer"})


def test_cli_show_config(capsys):
    for pipeline in (apes, audio, pretrain):
        assert pipeline.main(["show-config", "seed=7"]) == 0
        assert "seed: 7" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--resume", "model=debug", "seed=7"], ["model=debug", "--resume", "seed=7"],
                                  ["model=debug", "--config-name", "apes", "seed=7"]],
                         ids=["flag-first", "flag-between", "option-between"])
def test_cli_options_may_come_anywhere_after_the_action(capsys, argv):
    """`mambaseq apes run --resume model=small` used to stop at --resume: 'unrecognized arguments'."""
    from mambaseq import cli

    assert cli.main(["apes", "show-config", *argv]) == 0
    out = capsys.readouterr().out
    assert "size: debug" in out and "seed: 7" in out
    with pytest.raises(SystemExit):  # an unknown option is still an error
        cli.main(["apes", "show-config", "model=debug", "--bogus"])


@pytest.mark.parametrize("cmd,override,expected", [
    ("apes", "experiment=sc09", "experiment=sc09 belongs to the audio pipeline"),
    ("audio", "experiment=apes_gpu", "experiment=apes_gpu belongs to the apes pipeline"),
    ("pretrain", "experiment=apes", "experiment=apes belongs to the apes pipeline"),
    ("apes", "model=_options", "model=_options: not a model option; choose one of apes_cpu, base, debug,"),
    ("pretrain", "model=smal", "model=smal: not a model option; choose one of"),
], ids=["sc09-in-apes", "apes-in-audio", "apes-in-pretrain", "model-_options", "model-typo"])
def test_group_choices_of_another_pipeline_or_internal_files_are_errors(capsys, cmd, override, expected):
    """Another pipeline's experiment used to merge its keys in silently, and model=_options (a file the sizes
    include) passed as a size; both are one-line errors listing what is valid."""
    from mambaseq import cli

    assert cli.main([cmd, "show-config", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {expected}") and err.count("\n") == 1
    assert "_options" not in err.split("choose one of")[-1]


def test_every_experiment_belongs_to_one_pipeline():
    from mambaseq.settings import group_options

    for e in group_options("experiment"):
        assert sum(e.startswith(p) for p in runs.EXPERIMENTS.values()) == 1, e


def test_classification_counts_give_the_same_metrics_as_the_predictions(request):
    """The evaluation loop sums confusion counts; metrics from them equal metrics from the raw predictions."""
    rng = rng_for(request)
    x = torch.from_numpy(rng.integers(0, 4, (37, 9)))
    y = torch.from_numpy(rng.integers(0, 3, 37))

    class Guess(torch.nn.Module):  # a deterministic "classifier": logits from the first two tokens
        def forward(self, ids):
            return torch.nn.functional.one_hot(ids[:, 0] % 3, 3).float() + 0.5 * torch.nn.functional.one_hot(
                ids[:, 1] % 3, 3).float()

    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 37, 8)]
    s = eval_loop(Guess(), batches, classification_counts(3), torch.device("cpu"), "fp32")
    logits = Guess()(x)
    pred = logits.argmax(-1).numpy()
    yt, yp = confusion_pairs(s["confusion"].numpy())
    names = ["a", "b", "c"]
    assert classification_metrics(yt, yp, names) == classification_metrics(y.numpy(), pred, names)
    assert float(s["loss"]) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y, reduction="sum")))


def test_next_token_bits_sum_over_batches(request):
    torch.manual_seed(seed_for(request))
    from mambaseq import MambaConfig, MambaLMHeadModel

    lm = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=6))
    x = torch.from_numpy(rng_for(request).integers(0, 6, (5, 13)))
    whole = eval_loop(lm, [x], next_token_bits, torch.device("cpu"), "fp32")
    parts = eval_loop(lm, [x[:2], x[2:]], next_token_bits, torch.device("cpu"), "fp32")
    assert whole["count"].tolist() == [5.0] * 12
    np.testing.assert_allclose(parts["bits_sum"].numpy(), whole["bits_sum"].numpy(), **CLOSE["fp32_partial_sums"])


def test_evaluation_and_baseline_fits_show_progress(request, capsys):
    """`mambaseq apes run` was silent for minutes while it evaluated and fitted the k-mer baselines on a CPU:
    the evaluation loop shows a bar with counts and ETA, each baseline fit a line as it starts and ends."""
    from mambaseq import MambaConfig, MambaLMHeadModel
    from mambaseq.data.kmers import kmer_baselines

    rng = rng_for(request)
    x, y = rng.integers(0, 4, (40, 64)), rng.integers(0, 2, 40)
    acc = kmer_baselines(x[:30], y[:30], x[30:], y[30:], ks=(2, 3), progress=True)
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["k-mer baseline 1/2"] * 2 + ["k-mer baseline 2/2"] * 2
    assert out[-1].startswith(f"k-mer baseline 2/2: k=3 test accuracy {acc[3]:.3f}")
    torch.manual_seed(seed_for(request))
    lm = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=6))
    xs = torch.from_numpy(x[:6] % 6)
    eval_loop(lm, [xs[:3], xs[3:]], next_token_bits, torch.device("cpu"), "fp32", progress="test: 6 windows", total=2)
    err = capsys.readouterr().err
    assert "test: 6 windows: 100%" in err and "2/2" in err
    eval_loop(lm, [xs], next_token_bits, torch.device("cpu"), "fp32")  # no label: silent, as before
    assert capsys.readouterr().err == ""
