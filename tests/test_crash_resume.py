"""Crash safety (issue 14, kind 6): training killed with SIGKILL at seeded points -- inside a step, half-way
through writing the trainer state, after the weights of a checkpoint, while an old checkpoint is being
deleted -- and resumed each time ends with exactly the weights of an uninterrupted run."""

import signal
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

from seeding import rng_for

CHILD = textwrap.dedent('''
    import os, shutil, signal, sys
    import torch
    torch.set_num_threads(1)
    import mambaseq.training.checkpoint as ck
    from mambaseq import MambaConfig, MambaLMHeadModel
    from mambaseq.training import TrainConfig, lm_loss, train

    run_dir, phase, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def batch_fn(step, seq_len, batch_size):  # a pure function of the step, as the trainer requires
        if phase == "step" and step == n:
            die()
        return torch.randint(0, 10, (batch_size, seq_len + 1), generator=torch.Generator().manual_seed(1000 + step))

    calls = {"save": 0}
    real_save, real_model, real_rmtree = torch.save, ck._save_model, shutil.rmtree
    if phase == "save_state":  # the trainer state is half on disk when the process dies
        def save(obj, f, *a, **k):
            real_save(obj, f, *a, **k)
            calls["save"] += 1
            if calls["save"] == n:
                data = open(f, "rb").read()
                open(f, "wb").write(data[: len(data) // 2])
                die()
        ck.torch.save = save
    elif phase == "save_model":  # weights written, trainer state not yet
        def save_model(model, d):
            real_model(model, d)
            calls["save"] += 1
            if calls["save"] == n:
                die()
        ck._save_model = save_model
    elif phase == "prune":  # an old checkpoint partly deleted
        def rmtree(path, *a, **k):
            if ".tmp-old-" in str(path):
                os.unlink(os.path.join(path, "model.safetensors"))
                die()
            real_rmtree(path, *a, **k)
        ck.shutil.rmtree = rmtree

    torch.manual_seed(0)
    model = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=10))
    cfg = TrainConfig(max_steps=24, lr=1e-2, warmup_steps=2, seq_len=16, batch_size=2, ckpt_every=4, log_every=4,
                      keep_last=2, device="cpu", progress=False)
    train(model, lm_loss, batch_fn, cfg, run_dir, resume=True)
''')


def _run(tmp_path, run_dir, phase="none", n=0) -> int:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    p = subprocess.run([sys.executable, str(script), str(run_dir), phase, str(n)], capture_output=True, text=True,
                       timeout=120)
    if p.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(p.stderr[-3000:])
    return p.returncode


def _final_weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / "step_00000024" / "model.safetensors"))


def test_sigkill_at_random_points_resumes_to_identical_weights(tmp_path, request):
    rng = rng_for(request)
    ref = tmp_path / "ref"
    assert _run(tmp_path, ref) == 0
    run = tmp_path / "killed"
    kills = [("step", int(rng.integers(5, 11))), ("save_state", 1), ("save_model", 1), ("prune", 1),
             ("step", int(rng.integers(15, 23)))]
    for phase, n in kills:
        assert _run(tmp_path, run, phase, n) == -signal.SIGKILL, f"the {phase}:{n} kill did not happen"
    assert _run(tmp_path, run) == 0
    a, b = _final_weights(ref), _final_weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), kills
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert left == ["step_00000020", "step_00000024"], left  # killed saves' temp folders are gone

