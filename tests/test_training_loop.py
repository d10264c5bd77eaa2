"""Shared training machinery (mambaseq.training): optimizer groups, schedules, checkpoints, exact resume."""

import dataclasses
import math

import pytest
import torch

from mambaseq import MambaConfig
from mambaseq.model import MambaForSequenceClassification, MambaLMHeadModel, load_pretrained
from mambaseq.training import (SeqLenSchedule, TrainConfig, classification_loss, list_checkpoints, lm_loss,
                               param_groups, read_metrics, train, warmup_cosine)


def tiny_classifier(seed: int = 0) -> MambaForSequenceClassification:
    torch.manual_seed(seed)
    # the label is the last token: last-position pooling sees it directly
    return MambaForSequenceClassification(MambaConfig.from_name("debug", vocab_size=10, num_labels=3, pooling="last"))


def batch_fn(step: int, seq_len: int, batch_size: int):
    """Label = last token clipped to 0..2: learnable in a few steps; fresh random data per step."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randint(0, 4, (batch_size, seq_len), generator=g)
    y = x[:, -1].clamp(max=2)
    return x, y


def test_param_groups_no_weight_decay():
    m = tiny_classifier()
    decay, no_decay = param_groups(m, 0.1)
    nd = {id(p) for p in no_decay["params"]}
    for name, p in m.named_parameters():
        flagged = getattr(p, "_no_weight_decay", False) or p.ndim < 2
        assert (id(p) in nd) == flagged, name
    assert any(n.endswith("A_log") or "A_" in n for n, p in m.named_parameters() if id(p) in nd)
    lm = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=10))
    groups = param_groups(lm, 0.1)
    n_listed = sum(len(g["params"]) for g in groups)
    assert n_listed == len({id(p) for p in lm.parameters()})  # tied embedding listed once


def test_wide_head_trains_at_its_lr_scale():
    """model.wide_lr_scale puts the wide head's linear map in AdamW groups of its own at lr x scale; the
    schedule multiplies every group's lr alike; scale 1 keeps the usual two groups."""
    from mambaseq.model import MambaForSequenceClassification
    from mambaseq.training.optim import build_optimizer, build_scheduler

    def clf(scale):
        return MambaForSequenceClassification(MambaConfig.from_name("debug", vocab_size=8, num_labels=3,
                                                                    wide_kmer_size=2, wide_lr_scale=scale))

    assert len(param_groups(clf(1.0), 0.1, 1e-3)) == 2
    m = clf(25.0)
    opt = build_optimizer(m, 2e-3, 0.1)
    wide = {id(p) for p in m.wide.linear.parameters()}
    by_lr = {}
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        assert not ids or ids <= wide or not ids & wide  # a group is all wide head or none of it
        by_lr.setdefault(g["lr"], set()).update(ids)
    assert by_lr[2e-3 * 25.0] == wide and sum(map(len, by_lr.values())) == len({id(p) for p in m.parameters()})
    sched = build_scheduler(opt, 10, 100, 0.1)
    opt.step()
    sched.step()
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == pytest.approx([2e-3 * 0.2, 2e-3 * 25.0 * 0.2])  # step 1 of a 10-step warmup
    with pytest.raises(ValueError, match="wide_lr_scale"):
        clf(0.0)
    with pytest.raises(ValueError, match="base lr"):
        param_groups(m, 0.1)


@pytest.mark.parametrize("step,expected", [(0, 0.1), (9, 1.0), (10, 1.0), (55, 0.55), (100, 0.1), (150, 0.1)],
                         ids=["warm0", "warm-end", "peak", "mid", "end", "after"])
def test_warmup_cosine(step, expected):
    assert warmup_cosine(step, 10, 100, 0.1) == pytest.approx(expected, abs=1e-9)


def test_seq_len_schedule_constant_tokens():
    s = SeqLenSchedule(target_len=8192, batch_size=2, min_len=1024, stage_steps=5)
    assert s.stages() == [(1024, 16), (2048, 8), (4096, 4), (8192, 2)]
    assert [s.at(k) for k in (0, 4, 5, 14, 15, 1000)] == [(1024, 16), (1024, 16), (2048, 8), (4096, 4),
                                                        (8192, 2), (8192, 2)]
    assert {L * b for L, b in s.stages()} == {16384}
    assert SeqLenSchedule(4096, 3).at(0) == (4096, 3)  # no warmup


CFG = TrainConfig(max_steps=9, lr=5e-3, warmup_steps=2, seq_len=64, batch_size=4, seq_len_warmup=True,
                  seq_len_min=16, seq_len_stage_steps=2, max_tokens_per_micro=96, log_every=1, ckpt_every=3,
                  keep_last=2, progress=False)


def test_resume_is_exact_after_a_crash(tmp_path):
    ref = tiny_classifier()
    r_ref = train(ref, classification_loss, batch_fn, CFG, tmp_path / "ref")
    # the same run, crashing inside step 7 (after the checkpoint at step 6)
    crashed = tiny_classifier()

    def crashing(step, L, B):
        if step == 7:
            raise RuntimeError("simulated crash")
        return batch_fn(step, L, B)

    with pytest.raises(RuntimeError, match="simulated crash"):
        train(crashed, classification_loss, crashing, CFG, tmp_path / "run")
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_00000003", "step_00000006"]
    resumed = tiny_classifier(seed=123)  # different init: everything must come from the checkpoint
    r = train(resumed, classification_loss, batch_fn, CFG, tmp_path / "run", resume=True)
    assert r.step == r_ref.step == 9
    for (n, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    m_ref, m = read_metrics(tmp_path / "ref"), read_metrics(tmp_path / "run")
    assert m["train/loss"] == m_ref["train/loss"]  # one row per step, same values
    assert [s for s, _ in m["train/loss"]] == list(range(1, 10))
    assert m["train/seq_len"][-1][1] == 64 and m["train/seq_len"][0][1] == 16


def test_resume_with_other_parameter_groups_names_the_setting(tmp_path):
    """A run resumed with model.wide_lr_scale turned on (two more AdamW groups) raises a ValueError naming the
    checkpoint and the setting, not torch's bare group-count message."""
    def wide(scale):
        torch.manual_seed(0)
        return MambaForSequenceClassification(MambaConfig.from_name(
            "debug", vocab_size=10, num_labels=3, pooling="last", wide_kmer_size=2, wide_lr_scale=scale))

    short = dataclasses.replace(CFG, max_steps=3, seq_len_warmup=False)
    train(wide(1.0), classification_loss, batch_fn, short, tmp_path)
    with pytest.raises(ValueError, match=r"step_00000003.*wide_lr_scale"):
        train(wide(10.0), classification_loss, batch_fn, dataclasses.replace(short, max_steps=6), tmp_path,
              resume=True)


def test_resume_applies_the_new_learning_rates(tmp_path):
    """Resuming with another train.lr or model.wide_lr_scale (same parameter groups) trains at the new values:
    the loaded optimizer/scheduler state does not bring the checkpoint run's base learning rates back."""
    from mambaseq.training.checkpoint import STATE_NAME

    def wide(scale):
        torch.manual_seed(0)
        return MambaForSequenceClassification(MambaConfig.from_name(
            "debug", vocab_size=10, num_labels=3, pooling="last", wide_kmer_size=2, wide_lr_scale=scale))

    short = dataclasses.replace(CFG, max_steps=3, seq_len_warmup=False, lr=5e-3)
    train(wide(10.0), classification_loss, batch_fn, short, tmp_path)
    train(wide(5.0), classification_loss, batch_fn, dataclasses.replace(short, max_steps=6, lr=1e-3), tmp_path,
          resume=True)
    state = torch.load(list_checkpoints(tmp_path)[-1] / STATE_NAME, weights_only=False)
    base = sorted(g["initial_lr"] for g in state["optimizer"]["param_groups"])
    assert base == pytest.approx([1e-3, 1e-3, 5e-3, 5e-3])  # two groups at lr, the wide head's two at 5 x lr
    assert sorted(state["scheduler"]["base_lrs"]) == pytest.approx(base)


def test_resume_with_another_schedule_says_so(tmp_path, capsys):
    """Resuming with changed schedule settings (here train.max_steps and lr) prints one WARNING naming each
    change; resuming with the same settings prints none."""
    short = dataclasses.replace(CFG, max_steps=6, steps_per_call=3)
    train(tiny_classifier(), classification_loss, batch_fn, short, tmp_path, resume=True)
    capsys.readouterr()
    train(tiny_classifier(), classification_loss, batch_fn, short, tmp_path, resume=True)
    assert "WARNING" not in capsys.readouterr().out
    longer = dataclasses.replace(CFG, max_steps=9, lr=1e-3)
    train(tiny_classifier(), classification_loss, batch_fn, longer, tmp_path, resume=True)
    out = capsys.readouterr().out
    assert "WARNING: resuming with a different schedule" in out
    assert "train.max_steps 6 -> 9" in out and "train.lr 0.005 -> 0.001" in out and "steps_per_call" not in out
    assert "model asked for differs" not in out


def test_resume_with_another_model_of_the_same_shapes_says_so(tmp_path, capsys):
    """A model variant whose weights fit the checkpoint (here mean instead of last pooling) resumes with a
    WARNING naming the differing fields and suggesting its own out_dir."""
    cfg = dataclasses.replace(CFG, max_steps=6, steps_per_call=3)
    train(tiny_classifier(), classification_loss, batch_fn, cfg, tmp_path, resume=True)
    capsys.readouterr()
    torch.manual_seed(0)
    variant = MambaForSequenceClassification(MambaConfig.from_name("debug", vocab_size=10, num_labels=3, pooling="mean"))
    train(variant, classification_loss, batch_fn, cfg, tmp_path, resume=True)
    out = capsys.readouterr().out
    assert "WARNING: the model asked for differs from the checkpoint's (pooling 'last' -> 'mean')" in out
    assert "out_dir" in out


def test_resume_with_only_damaged_checkpoints_stops_and_deletes_nothing(tmp_path):
    """--resume where every checkpoint is damaged raises (one line: CorruptFileError is a ValueError naming the
    folder and the checkpoints) and leaves them and the metrics as they were; evaluation says they are damaged,
    not that there are none."""
    from mambaseq.fileio import CorruptFileError
    from mambaseq.runs import require_checkpoint

    cfg = dataclasses.replace(CFG, max_steps=6, ckpt_every=3)
    train(tiny_classifier(), classification_loss, batch_fn, cfg, tmp_path)
    ckpts = list_checkpoints(tmp_path)
    assert len(ckpts) == 2
    for c in ckpts:
        w = c / "model.safetensors"
        w.write_bytes(w.read_bytes()[:100])
    metrics = (tmp_path / "metrics.csv").read_bytes()
    with pytest.warns(Warning, match="damaged"), pytest.raises(CorruptFileError, match="none is complete"):
        train(tiny_classifier(), classification_loss, batch_fn, cfg, tmp_path, resume=True)
    assert list_checkpoints(tmp_path) == ckpts and (tmp_path / "metrics.csv").read_bytes() == metrics
    with pytest.warns(Warning, match="damaged"), pytest.raises(CorruptFileError, match="every checkpoint is damaged"):
        require_checkpoint(tmp_path, "apes")


def test_training_learns_and_checkpoints_load(tmp_path):
    cfg = dataclasses.replace(CFG, max_steps=40, seq_len_warmup=False, max_tokens_per_micro=0, batch_size=16,
                              seq_len=32, lr=2e-2, warmup_steps=5, log_every=20, ckpt_every=0)
    model = tiny_classifier()

    def eval_fn(m, step):
        x, y = batch_fn(10**6, 32, 256)
        return {"acc": float((m(x).argmax(-1) == y).float().mean())}

    r = train(model, classification_loss, batch_fn, cfg, tmp_path, eval_fn=eval_fn)
    assert r.metrics["val/acc"] > 0.8  # chance is 0.5 (label 2 for tokens 2 and 3)
    assert r.tokens_per_s > 0 and not r.stopped_early
    (ckpt,) = list_checkpoints(tmp_path)
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors", "trainer_state.pt"]
    loaded = load_pretrained(ckpt)
    x, _ = batch_fn(5, 64, 4)
    assert torch.equal(loaded(x), model(x))
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]



def test_steps_per_call_cuts_a_run_into_exact_resumable_calls(tmp_path, capsys):
    """A 9-step run as calls of 4, 4 and 1 steps (steps_per_call=4, resume) ends with the weights of one
    uninterrupted run; each call checkpoints, says how many steps and calls are left, and prints the ETA."""
    ref = tiny_classifier()
    train(ref, classification_loss, batch_fn, CFG, tmp_path / "ref")
    cfg = dataclasses.replace(CFG, steps_per_call=4)
    steps = []
    for call in range(4):  # the fourth call finds the run complete and trains nothing
        model = tiny_classifier()
        r = train(model, classification_loss, batch_fn, cfg, tmp_path / "run", resume=call > 0)
        steps.append((r.step, r.stopped_early, r.max_steps))
    assert steps == [(4, True, 9), (8, True, 9), (9, False, 9), (9, False, 9)]
    for a, b in zip(ref.state_dict().values(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    out = capsys.readouterr().out
    assert "end of this call at step 4/9: 4 steps in" in out and "2 more call(s) of 4 steps" in out
    assert "end of this call at step 8/9" in out and "1 more call(s)" in out
    assert "train step 3/9 (this call 3/4)" in out and "ETA call" in out  # progress=False: a line per log
    assert [p.name for p in list_checkpoints(tmp_path / "run")][-1] == "step_00000009"

def test_lm_loss_and_early_stop(tmp_path):
    torch.manual_seed(0)
    lm = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=10))
    cfg = dataclasses.replace(CFG, max_steps=50, seq_len_warmup=False, max_time_s=1e-6, ckpt_every=0)
    r = train(lm, lm_loss, lambda s, L, B: batch_fn(s, L, B)[0], cfg, tmp_path)
    assert r.stopped_early and r.step == 1
    assert math.isfinite(r.metrics["train/bits_per_token"])
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001"]
    # on CPU: no device peak (was a fake 0.0), the process's peak RSS under its own name
    import resource

    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    assert r.summary()["peak_memory_gib"] is None and 0 < r.summary()["peak_rss_gib"] <= rss_gib


def test_train_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown train settings.*'lr_typo'"):
        TrainConfig.from_dict({"lr_typo": 1})


def test_cluster_accuracy_ci_widens_for_correlated_windows():
    """Windows in groups that are hit or missed together (one homologous region, four species): the cluster
    bootstrap's interval is about sqrt(group size) wider than the Wilson interval of independent windows, and
    contains the truth where Wilson, for a chance-level classifier with few regions, may not; one window per
    group gives about Wilson's width; fewer than 5 groups fall back to Wilson; the seed fixes the result."""
    import numpy as np

    from mambaseq.training.evaluation import accuracy_ci, cluster_accuracy_ci

    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(60), 4)                        # 60 regions x 4 species
    hits = np.repeat(rng.random(60) < 0.25, 4).astype(int)      # whole regions right or wrong
    lo, hi = cluster_accuracy_ci(hits, groups)
    wlo, whi = accuracy_ci(int(hits.sum()), hits.size)
    assert lo <= hits.mean() <= hi and (hi - lo) > 1.6 * (whi - wlo), ((lo, hi), (wlo, whi))
    assert cluster_accuracy_ci(hits, groups) == (lo, hi)        # deterministic
    single = (rng.random(240) < 0.25).astype(int)
    slo, shi = cluster_accuracy_ci(single, np.arange(240))
    wlo, whi = accuracy_ci(int(single.sum()), 240)
    assert abs((shi - slo) - (whi - wlo)) < 0.25 * (whi - wlo), ((slo, shi), (wlo, whi))
    assert cluster_accuracy_ci(hits[:16], groups[:16]) == accuracy_ci(int(hits[:16].sum()), 16)  # 4 groups
    assert all(math.isnan(v) for v in cluster_accuracy_ci(np.zeros(0), []))
