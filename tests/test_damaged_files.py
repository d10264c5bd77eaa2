"""Damaged files give one error naming the file (issue 14, kind 5) and damaged checkpoints never block a
run (kind 6): model.safetensors / config.json / trainer_state.pt cut or overwritten at random places, gzip
FASTA truncated, corrupted or followed by junk."""

import gzip
import json
import warnings

import numpy as np
import pytest
import torch

from mambaseq import MambaConfig, MambaLMHeadModel
from mambaseq.audio.metrics import DigitClassifier
from mambaseq.data_prep.fasta import prepare_fasta
from mambaseq.fileio import CorruptFileError, load_weights
from mambaseq.model import MambaForSequenceClassification, load_pretrained
from mambaseq.sashimi import SaShiMiConfig, SaShiMiLM
from mambaseq.training.checkpoint import (CheckpointWarning, latest_checkpoint, list_checkpoints, load_checkpoint,
                                          save_checkpoint)
from seeding import current_seed, rng_for


def _lm(seed: int = 0) -> MambaLMHeadModel:
    torch.manual_seed(seed)
    return MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=10))


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ----------------------------------------------------------------------------- model.safetensors, config.json
def _damaged_versions(good: bytes, rng: np.random.Generator, n: int) -> list[tuple[str, bytes]]:
    out = [("empty", b""), ("random", rng.integers(0, 256, 300, dtype=np.uint8).tobytes()), ("appended", good + b"x"),
           ("half", good[: len(good) // 2])]
    for _ in range(n):
        if rng.random() < 0.6:
            out.append(("cut", good[: int(rng.integers(0, len(good)))]))
        else:  # overwrite bytes inside the 8-byte length + JSON header
            b = bytearray(good)
            i = int(rng.integers(0, 40))
            b[i : i + 3] = rng.integers(0, 256, 3, dtype=np.uint8).tobytes()
            out.append(("header", bytes(b)))
    return out


def test_damaged_weights_name_the_file(tmp_path, request):
    """The case `corrupt_safetensors_no_path.py` and its kind: 4 fixed + 30 random damaged weight files."""
    d = _lm().save_pretrained(tmp_path / "ckpt")
    w = d / "model.safetensors"
    good = w.read_bytes()
    for name, data in _damaged_versions(good, rng_for(request), 30):
        w.write_bytes(data)
        for load in (MambaLMHeadModel.from_pretrained, load_pretrained):
            with pytest.raises(CorruptFileError) as ei:
                load(d)
            assert str(w) in str(ei.value), name
    w.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained(d)


def test_damaged_config_names_the_file(tmp_path, request):
    d = _lm().save_pretrained(tmp_path / "ckpt")
    c = d / "config.json"
    good = c.read_bytes()
    rng = rng_for(request)
    for cut in [0, 1, len(good) - 3, *rng.integers(1, len(good) - 3, 20)]:
        c.write_bytes(good[: int(cut)])
        for load in (MambaLMHeadModel.from_pretrained, load_pretrained):
            with pytest.raises(ValueError) as ei:
                load(d)
            assert str(c) in str(ei.value)


def test_weights_of_another_shape_name_the_file_and_change_nothing(tmp_path):
    d = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=10, d_state=8)).save_pretrained(tmp_path / "x")
    m = _lm(1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(CorruptFileError, match="shape mismatch") as ei:
        load_weights(m, d / "model.safetensors")
    assert str(d / "model.safetensors") in str(ei.value)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_lm_weights_into_classifier_still_load(tmp_path):
    """Non-strict cross-architecture loading (LM -> classifier) keeps working with the checked loader."""
    lm = _lm()
    d = lm.save_pretrained(tmp_path / "lm")
    clf = MambaForSequenceClassification.from_pretrained(d, num_labels=3)
    assert torch.equal(clf.backbone.embedding.weight, lm.backbone.embedding.weight)


def test_other_model_files_name_the_file(tmp_path):
    sash = SaShiMiLM(SaShiMiConfig(d_model=8, n_layer=1, pool=(2,), d_state=4))
    d = sash.save_pretrained(tmp_path / "sashimi")
    (d / "model.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(CorruptFileError, match="model.safetensors"):
        SaShiMiLM.from_pretrained(d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["n_layers"] = cfg.pop("n_layer")
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config.json: unknown SaShiMiConfig field\(s\) \[.n_layers.\]"):
        SaShiMiLM.from_pretrained(d)
    c = DigitClassifier(n_classes=3, width=8, n_mels=16).save(tmp_path / "clf")
    (c / "classifier.safetensors").write_bytes((c / "classifier.safetensors").read_bytes()[:100])
    with pytest.raises(CorruptFileError, match="classifier.safetensors"):
        DigitClassifier.load(c)


# ----------------------------------------------------------------------------- training checkpoints
def _run_with_two_checkpoints(tmp_path):
    m = _lm()
    opt = torch.optim.AdamW(m.parameters())
    m(torch.randint(0, 10, (2, 8), generator=torch.Generator().manual_seed(current_seed()))).sum().backward()
    opt.step()
    save_checkpoint(tmp_path, 100, m, opt)
    save_checkpoint(tmp_path, 200, m, opt)
    return m, opt


DAMAGE = {
    "state_cut": ("trainer_state.pt", lambda b: b[:2000]),
    "state_empty": ("trainer_state.pt", lambda b: b""),
    "weights_cut": ("model.safetensors", lambda b: b[: len(b) // 3]),
    "weights_junk": ("model.safetensors", lambda b: b"\xff" * len(b)),
    "config_cut": ("config.json", lambda b: b[:100]),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_and_says_so(tmp_path, damage):
    """The case `halfwritten_checkpoint.py` and its kind: resume and evaluation use the newest complete
    checkpoint (with a warning naming the damaged file); loading the damaged one names the file and leaves
    the model and optimizer as they were."""
    _run_with_two_checkpoints(tmp_path)
    newest = list_checkpoints(tmp_path)[-1]
    fname, fn = DAMAGE[damage]
    f = newest / fname
    f.write_bytes(fn(f.read_bytes()))
    with pytest.warns(CheckpointWarning, match=str(f)):
        ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "step_00000100"
    with pytest.warns(CheckpointWarning):
        assert isinstance(load_pretrained(latest_checkpoint(tmp_path)), MambaLMHeadModel)

    fresh = _lm(7)
    opt = torch.optim.AdamW(fresh.parameters())
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError) as ei:
        load_checkpoint(newest, fresh, opt)
    assert str(f) in str(ei.value)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items()) and not opt.state
    state = load_checkpoint(ckpt, fresh, opt)
    assert state["step"] == 100 and opt.state


def test_all_checkpoints_damaged_gives_none_with_warnings(tmp_path):
    _run_with_two_checkpoints(tmp_path)
    for c in list_checkpoints(tmp_path):
        (c / "model.safetensors").write_bytes(b"")
    with pytest.warns(CheckpointWarning, match="no complete checkpoint left"):
        assert latest_checkpoint(tmp_path) is None


def test_optimizer_that_does_not_fit_changes_nothing(tmp_path):
    m, _ = _run_with_two_checkpoints(tmp_path)
    fresh = _lm(3)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    wrong_opt = torch.optim.AdamW([fresh.lm_head.weight])  # one group of 1 parameter: does not fit
    with pytest.raises(ValueError):
        load_checkpoint(latest_checkpoint(tmp_path), fresh, wrong_opt)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_temp_folders_of_killed_saves_are_cleaned(tmp_path):
    m, opt = _run_with_two_checkpoints(tmp_path)
    root = tmp_path / "checkpoints"
    (root / ".tmp-killed").mkdir()
    (root / ".tmp-killed" / "model.safetensors").write_bytes(b"half")
    (root / ".tmp-old-step_00000050").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert latest_checkpoint(tmp_path).name == "step_00000200"  # temp folders are never candidates
    save_checkpoint(tmp_path, 300, m, opt)
    assert sorted(p.name for p in root.iterdir()) == ["step_00000200", "step_00000300"]


# ----------------------------------------------------------------------------- gzip / plain FASTA
def _fasta_text(rng: np.random.Generator, n_records: int = 3) -> str:
    return "".join(f">r{i}\n" + "\n".join("".join(rng.choice(list("ACGT"), 60)) for _ in range(50)) + "\n"
                   for i in range(n_records))


def test_gzip_fasta_errors_name_the_file(tmp_path, request):
    """The case `gzip_fasta_errors_unnamed.py`: truncated and trailing-junk .fa.gz among several inputs."""
    full = gzip.compress(_fasta_text(rng_for(request)).encode())
    (tmp_path / "human.fa.gz").write_bytes(full)
    for name, data, match in [("chimp", full[: len(full) // 2], "truncated gzip"),
                              ("gorilla", full + b"trailing junk\n", "trailing garbage"),
                              ("bonobo", full[:-6] + bytes(6), "corrupt gzip")]:
        p = tmp_path / f"{name}.fa.gz"
        p.write_bytes(data)
        with pytest.raises(ValueError, match=match) as ei:
            prepare_fasta({"human": tmp_path / "human.fa.gz", name: p}, tmp_path / f"store_{name}", progress=False)
        assert str(p) in str(ei.value)
        assert not (tmp_path / f"store_{name}").exists()  # nothing half-written


@pytest.mark.parametrize("compressed", [True, False], ids=["gzip", "plain"])
def test_random_fasta_corruption_errors_name_the_file(tmp_path, request, compressed):
    """Property (40 damaged files each): prepare_fasta succeeds, or raises ValueError naming the damaged
    file and leaves no store behind; nothing else escapes (EOFError, BadGzipFile, zlib.error, ...)."""
    rng = rng_for(request)
    text = _fasta_text(rng).encode()
    good = gzip.compress(text, mtime=0) if compressed else text
    errors = 0
    for i in range(40):
        b = bytearray(good)
        kind = int(rng.integers(4))
        if kind == 0:
            b = b[: int(rng.integers(1, len(b)))]
        elif kind == 1:
            for j in rng.integers(0, len(b), int(rng.integers(1, 5))):
                b[j] = int(rng.integers(0, 256))
        elif kind == 2:
            b += rng.integers(0, 256, int(rng.integers(1, 50)), dtype=np.uint8).tobytes()
        else:
            j = int(rng.integers(0, len(b)))
            b[j:j] = rng.integers(0, 256, int(rng.integers(1, 20)), dtype=np.uint8).tobytes()
        p = tmp_path / f"x{i}.fa{'.gz' if compressed else ''}"
        p.write_bytes(bytes(b))
        out = tmp_path / f"store{i}"
        try:
            prepare_fasta([p], out, progress=False)
        except ValueError as e:
            assert str(p) in str(e), str(e)
            assert not out.exists()
            errors += 1
    assert errors > 0
