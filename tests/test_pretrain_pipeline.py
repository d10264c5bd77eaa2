"""Pretraining pipeline end to end on the debug model (subprocesses, as a user runs it):
resume after SIGKILL gives the same losses, 2 gloo DDP processes match 1 process, generation writes FASTA
with log-likelihoods the model agrees with."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mambaseq.data import TokenStore, encode
from mambaseq.generation import sequence_loglik
from mambaseq.model import load_pretrained
from mambaseq.pipelines import pretrain
from mambaseq.training import latest_checkpoint, read_metrics

from test_pretrain_data import write_genome
from tolerances import CLOSE

STEPS = 24
# a throttled launcher: each batch sleeps, so the SIGKILL lands mid-run on any machine (numerics unchanged)
THROTTLED = """
import sys, time
from mambaseq.data import ShardedLMBatches
from mambaseq.pipelines import pretrain
orig = ShardedLMBatches.__call__
def slow(self, *a):
    time.sleep(0.15)
    return orig(self, *a)
ShardedLMBatches.__call__ = slow
sys.exit(pretrain.main(sys.argv[1:]))
"""


def overrides(tmp: Path, fasta: Path, out: str) -> list[str]:
    return ["experiment=pretrain_debug", "data.source=fasta", f"data.fasta={fasta}", f"data.out_root={tmp / 'data'}",
            f"out_dir={tmp / out}", f"train.max_steps={STEPS}", "train.eval_every=8", "train.ckpt_every=4",
            "train.keep_last=10"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def pipeline(*args: str) -> list[str]:
    return [sys.executable, "-m", "mambaseq.pipelines.pretrain", *args]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    fasta = write_genome(tmp / "genome.fa", seed=1)
    subprocess.run(pipeline("train", *overrides(tmp, fasta, "ref")), check=True, env=env(), capture_output=True)
    return tmp, fasta, next((tmp / "ref").iterdir())


def losses(run: Path, name: str = "train/loss") -> np.ndarray:
    return np.array([v for _, v in read_metrics(run)[name]])


def test_reference_run_learns(setup):
    _, _, ref = setup
    loss = losses(ref)
    assert len(loss) == STEPS and np.isfinite(loss).all()
    assert loss[-4:].mean() < loss[:4].mean() - 0.1, loss  # motif-rich DNA: loss must fall
    assert len(losses(ref, "val/bits_per_base")) == 3  # steps 8, 16 and the end


def test_resume_after_sigkill_is_exact(setup):
    tmp, fasta, ref = setup
    script = tmp / "throttled.py"
    script.write_text(THROTTLED)
    args = overrides(tmp, fasta, "killed")
    proc = subprocess.Popen([sys.executable, str(script), "train", *args], env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    run = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp / "killed").glob("*/checkpoints/step_00000008"))
        if found:
            run = found[0].parents[1]
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert run is not None and proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    last = latest_checkpoint(run)
    assert 8 <= int(last.name.split("_")[1]) < STEPS  # really interrupted mid-way
    subprocess.run(pipeline("--resume", "train", *args), check=True, env=env(), capture_output=True)
    np.testing.assert_array_equal(losses(run), losses(ref))  # every step, before and after the kill
    np.testing.assert_array_equal(losses(run, "val/bits_per_base"), losses(ref, "val/bits_per_base"))
    a, b = load_pretrained(latest_checkpoint(ref)), load_pretrained(latest_checkpoint(run))
    for (n, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), n


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun not installed")
def test_ddp_two_gloo_processes_match_one(setup):
    tmp, fasta, ref = setup
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "mambaseq.pipelines.pretrain",
                        "train", *overrides(tmp, fasta, "ddp")], env=env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    run = next((tmp / "ddp").iterdir())
    assert "2 process(es)" in r.stdout and r.stdout.count("pretraining debug") == 1  # rank 0 prints alone
    np.testing.assert_allclose(losses(run), losses(ref), **CLOSE["ddp_metrics"])
    np.testing.assert_allclose(losses(run, "val/bits_per_base"), losses(ref, "val/bits_per_base"), **CLOSE["ddp_metrics"])
    np.testing.assert_allclose(losses(run, "train/tokens_per_s") > 0, True)
    a, b = load_pretrained(latest_checkpoint(ref)), load_pretrained(latest_checkpoint(run))
    for (n, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, **CLOSE["ddp_weights"], msg=n)


def test_generate_writes_fasta_with_model_logliks(setup):
    tmp, fasta, ref = setup
    cfg = pretrain.load_config(overrides(tmp, fasta, "ref") + ["generate.prompt_len=40", "generate.n_new=30",
                                                               "generate.n_samples=3"])
    stats = pretrain.generate(cfg, "debug", 64)
    text = (ref / "generated" / "samples.fasta").read_text()
    headers = re.findall(r"^>(.*)$", text, re.M)
    seqs = [s.replace("\n", "") for s in re.split(r"^>.*\n", text, flags=re.M)[1:]]
    assert len(headers) == 3 and all(len(s) == 30 and set(s) <= set("ACGT") for s in seqs)
    # the recorded log-likelihood is what the model gives the sample after its prompt in one parallel pass
    model = pretrain.ACGTOnly(load_pretrained(latest_checkpoint(ref)))
    store = TokenStore(tmp / "data" / "pretrain_fasta")
    prompts = re.findall(r"^>real\d+ (\S+):(\d+)-(\d+)", (ref / "generated" / "real_continuations.fasta").read_text(),
                         re.M)
    assert len(prompts) == 3
    for h, s, (seq, a, b) in zip(headers, seqs, prompts):
        prompt = torch.from_numpy(np.array(store.window(seq, int(a) - 1, int(b)))).long()  # 1-based, inclusive
        full = torch.cat([prompt, torch.from_numpy(encode(s)).long()])[None]
        ll = float(sequence_loglik(model, full) - sequence_loglik(model, full[:, :40]))
        assert float(re.search(r"loglik_nats=(\S+)", h).group(1)) == pytest.approx(ll, abs=0.02)
    assert {"samples", "real_continuations", "iid_gc_matched", "real_reference"} <= set(stats["spectra"])
    assert json.loads((ref / "generated" / "generation.json").read_text())["n_samples"] == 3


def test_finetune_apes_from_pretrained_backbone(setup):
    tmp, fasta, ref = setup
    lm_dir = latest_checkpoint(ref)
    cfg = pretrain.load_config(overrides(tmp, fasta, "ft"))
    cfg["finetune"]["apes_overrides"] = [
        "data.source=simulated", "data.sim_length=60000", "data.region_size=20000", f"data.out_root={tmp / 'apes'}",
        "data.seq_len=64", "train.max_steps=3", "train.batch_size=4", "train.progress=false",
        "eval.val_windows_per_class=2", "eval.test_windows_per_class=4"]
    out = pretrain.finetune(cfg, lm_dir)
    assert set(out) >= {"pretrained", "scratch", "gain_accuracy"}
    for arm in ("pretrained", "scratch"):
        assert 0.0 <= out[arm]["accuracy"] <= 1.0 and out[arm]["synthetic"]
    assert json.loads((tmp / "ft" / "finetune" / "comparison.json").read_text())["init_from"] == str(lm_dir)
    # both arms have the LM's architecture; the pretrained arm starts from its backbone, the scratch arm does not
    from safetensors.torch import load_file

    from mambaseq.pipelines import apes

    lm = load_file(str(lm_dir / "model.safetensors"))
    starts = {}
    for arm in ("pretrained", "scratch"):
        acfg = apes.load_config(cfg["finetune"]["apes_overrides"] + [f"init_from={lm_dir}",
                                                                      f"init_weights={arm == 'pretrained'}"])
        starts[arm] = apes.build_model(acfg, 5).state_dict()
        trained = load_pretrained(latest_checkpoint(next((tmp / "ft" / "finetune" / arm).iterdir())))
        assert {k: v.shape for k, v in trained.state_dict().items()} == {k: v.shape for k, v in starts[arm].items()}
    backbone = [k for k in lm if k.startswith("backbone.")]
    assert backbone and all(torch.equal(starts["pretrained"][k], lm[k]) for k in backbone)
    assert not all(torch.equal(starts["scratch"][k], lm[k]) for k in backbone)
