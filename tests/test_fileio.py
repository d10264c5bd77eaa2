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
