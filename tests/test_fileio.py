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
