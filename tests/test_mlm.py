"""Masked-LM pretraining: BERT masking statistics (15%, 80/10/10, never specials), data-parallel masks equal
one process's, ``mambaseq pretrain`` with objective=mlm learns, and the apes classifier fine-tunes from it."""

from __future__ import annotations

import json
import zlib

import pytest
import torch

from mambaseq import MambaConfig, MambaForMaskedLM, MambaForSequenceClassification, load_pretrained
from mambaseq.data.dna import MASK_ID, PAD_ID, VOCAB
from mambaseq.pipelines import apes, pretrain
from mambaseq.training import MaskedBatches, latest_checkpoint, mask_tokens, mlm_loss, read_metrics

from test_pretrain_data import write_genome


def seed_of(request) -> int:
    return zlib.crc32(request.node.name.encode())


def test_masking_follows_the_80_10_10_rule(request):
    g = torch.Generator().manual_seed(seed_of(request))
    ids = torch.randint(0, 5, (64, 2048), generator=g)
    ids[:, :16] = PAD_ID  # padding is never chosen
    inputs, labels = mask_tokens(ids, g)
    chosen = labels != -100
    n = chosen.sum().item()
    assert not chosen[:, :16].any() and torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # unchosen positions untouched
    assert abs(n / ids[:, 16:].numel() - 0.15) < 0.005
    masked = (inputs[chosen] == MASK_ID).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()  # incl. random draws equal to the original
    assert abs(masked - 0.8) < 0.01
    # 10% kept + the 10% random bases that hit the original (an A/C/G/T original, 4/5, drawn again, 1/4)
    assert abs(kept - (0.1 + 0.1 * 0.8 / 4)) < 0.01
    changed = chosen & (inputs != MASK_ID) & (inputs != ids)
    assert abs(changed.sum().item() / n - 0.1 * (1 - 0.8 / 4)) < 0.01
    assert set(inputs[changed].unique().tolist()) == {0, 1, 2, 3}  # random bases, never N or specials
    g1, g2 = (torch.Generator().manual_seed(7) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(mask_tokens(ids, g1), mask_tokens(ids, g2)))  # reproducible


def test_masked_batches_shard_one_global_draw():
    windows = torch.randint(0, 4, (8, 101), generator=torch.Generator().manual_seed(3))

    def batch_fn(step, seq_len, local_batch, rank=0):
        return windows[rank * local_batch:(rank + 1) * local_batch, : seq_len + 1]

    one = MaskedBatches(batch_fn, seed=5)(step=4, seq_len=100, local_batch=8)
    parts = [MaskedBatches(lambda s, L, b, r=r: batch_fn(s, L, b, r), seed=5, rank=r, world_size=2)(4, 100, 4)
             for r in range(2)]
    for i in range(2):
        assert torch.equal(torch.cat([p[i] for p in parts]), one[i])
    assert one[0].shape == (8, 100)
    assert not torch.equal(MaskedBatches(batch_fn, seed=5)(5, 100, 8)[1], one[1])  # fresh masks per step


def test_mlm_loss_counts_only_masked_positions():
    torch.manual_seed(0)
    model = MambaForMaskedLM(MambaConfig.from_name("debug", vocab_size=len(VOCAB), bidirectional=True))
    ids = torch.randint(0, 4, (2, 30))
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 17] = ids[0, 3], ids[1, 17]
    loss, m = mlm_loss(model, (ids, labels))
    logits = model(ids)
    want = torch.nn.functional.cross_entropy(torch.stack([logits[0, 3], logits[1, 17]]), labels[labels != -100])
    torch.testing.assert_close(loss, want)
    assert m["tokens"] == 60
    zero, _ = mlm_loss(model, (ids, torch.full_like(ids, -100)))
    assert zero.item() == 0.0 and zero.requires_grad


def test_pretrain_mlm_then_finetune_the_apes_classifier(tmp_path, capsys):
    fasta = write_genome(tmp_path / "genome.fa", seed=2)
    cfg = pretrain.load_config([
        "experiment=pretrain_debug", "objective=mlm", "model.bidirectional=true", "model.rc_equivariant=true",
        "data.source=fasta", f"data.fasta={fasta}", f"data.out_root={tmp_path / 'data'}",
        f"out_dir={tmp_path / 'pre'}", "train.max_steps=24", "train.eval_every=12", "generate.enabled=true",
        "finetune.enabled=true"])
    cfg["finetune"]["apes_overrides"] = [
        "data.source=simulated", "data.sim_length=60000", "data.region_size=12000", "train.max_steps=4",
        "train.batch_size=4", "train.warmup_steps=1", "train.progress=false", "eval.test_windows_per_class=4",
        "eval.val_windows_per_class=2", "eval.baseline_train_tokens=0", "model.pooling=mean", "data.seq_len=128",
        f"data.out_root={tmp_path / 'apes_data'}"]
    pretrain.run_all(cfg)
    out = capsys.readouterr().out
    assert "masked bases" in out and "generation skipped" in out
    run = next((tmp_path / "pre").glob("fasta_debug_L64_mlm"))
    loss = [v for _, v in read_metrics(run)["train/loss"]]
    assert loss[-4:] and sum(loss[-4:]) / 4 < sum(loss[:4]) / 4 - 0.1, loss  # motif-rich DNA: it learns
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert 0 < m["bits_per_base"] < 2.5 and m["n_tokens"] > 0
    mlm = load_pretrained(latest_checkpoint(run))
    assert type(mlm) is MambaForMaskedLM and mlm.cfg.bidirectional and mlm.cfg.rc_equivariant
    comp = json.loads((tmp_path / "pre" / "finetune" / "comparison.json").read_text())
    assert set(comp) >= {"pretrained", "scratch"} and 0 <= comp["pretrained"]["accuracy"] <= 1
    assert comp["init_from"] == str(latest_checkpoint(run))
    clf = load_pretrained(latest_checkpoint(next((tmp_path / "pre" / "finetune" / "pretrained").glob("*_L*"))))
    assert type(clf) is MambaForSequenceClassification and clf.cfg.rc_equivariant and clf.cfg.bidirectional
    assert clf.cfg.pooling == "mean"
    with pytest.raises(ValueError, match="causal LM"):
        pretrain.generate(cfg, "debug", 64)


def test_apes_config_picks_dna_models():
    cfg = apes.load_config(["model=debug", "model.bidirectional=true", "model.rc_equivariant=true",
                            "model.pooling=mean"])
    clf = apes.build_model(cfg, 5)
    assert clf.cfg.bidirectional and clf.cfg.rc_equivariant and clf.cfg.pooling == "mean"


def test_masked_lm_with_a_causal_model_warns():
    """objective=mlm on a causal backbone sees only left context: the pipeline warns and names the fix; with
    model.bidirectional=true it does not."""
    import warnings

    cfg = pretrain.load_config(["experiment=pretrain_debug", "objective=mlm"])
    with pytest.warns(UserWarning, match="model.bidirectional=true"):
        pretrain.build_model(cfg)
    cfg = pretrain.load_config(["experiment=pretrain_debug", "objective=mlm", "model.bidirectional=true"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pretrain.build_model(cfg)
