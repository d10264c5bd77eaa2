"""Atomic small-file writes: the result appears whole or not at all, and no temporary file is left."""

import json

import numpy as np
import pytest

from mambaseq.fileio import atomic_write_text, write_json


def test_write_json_round_trip_numpy_scalars(tmp_path):
    p = write_json({"acc": np.float32(0.5), "n": 3}, tmp_path / "sub" / "m.json", indent=1)
    assert json.loads(p.read_text()) == {"acc": 0.5, "n": 3}
    assert sorted(x.name for x in p.parent.iterdir()) == ["m.json"]


def test_failed_write_keeps_previous_file(tmp_path):
    p = atomic_write_text(tmp_path / "m.json", "old\n")

    with pytest.raises(TypeError):
        write_json({"x": object()}, p)  # not serialisable: fails before anything is written
    with pytest.raises(TypeError):
        atomic_write_text(p, 123)  # fails while writing the temporary file
    assert p.read_text() == "old\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.json"]


def test_atomic_path_keeps_the_suffix_and_the_old_file_on_failure(tmp_path):
    from mambaseq.fileio import atomic_path

    p = atomic_write_text(tmp_path / "x.npy", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            assert tmp.suffix == ".npy" and tmp.parent == p.parent  # writers that go by the extension
            np.save(tmp, np.arange(3))
            raise RuntimeError("interrupted")
    assert p.read_text() == "old" and sorted(x.name for x in tmp_path.iterdir()) == ["x.npy"]
    with atomic_path(p) as tmp:
        np.save(tmp, np.arange(3))
    assert np.load(p).tolist() == [0, 1, 2] and sorted(x.name for x in tmp_path.iterdir()) == ["x.npy"]


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    from mambaseq.fileio import atomic_dir

    out = tmp_path / "store"
    with atomic_dir(out) as d:
        (d / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as d:
            (d / "b").write_text("2")
            raise RuntimeError("interrupted")
    assert sorted(x.name for x in out.iterdir()) == ["a"]  # the old folder, untouched
    with atomic_dir(out) as d:
        (d / "b").write_text("2")
    assert sorted(x.name for x in out.iterdir()) == ["b"]  # replaced whole
    assert sorted(x.name for x in tmp_path.iterdir()) == ["store"]  # no temporary folders left


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002], ids=["022", "027", "002"])
def test_atomic_writes_get_the_mode_of_an_ordinary_write(tmp_path, umask):
    """mkstemp/mkdtemp make private files (0o600) and folders (0o700); what the atomic writers leave behind
    has the mode ``open`` / ``mkdir`` would give under the umask (new-user trial, issue 4), the saved model
    folders included."""
    import os
    import stat

    from mambaseq import MambaConfig, MambaLMHeadModel
    from mambaseq.fileio import atomic_dir
    from mambaseq.hf_compat import save_transformers

    old = os.umask(umask)
    try:
        files = [write_json({"a": 1}, tmp_path / "m.json")]
        with atomic_dir(tmp_path / "store") as d:
            (d / "x").write_text("1")
        model = MambaLMHeadModel(MambaConfig.from_name("debug", vocab_size=8))
        files += [p / n for p in (model.save_pretrained(tmp_path / "ckpt"), save_transformers(model, tmp_path / "hf"))
                  for n in ("config.json", "model.safetensors")]
    finally:
        os.umask(old)
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p
    assert stat.S_IMODE((tmp_path / "store").stat().st_mode) == 0o777 & ~umask
