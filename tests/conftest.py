"""Every test starts its global random generators (torch, numpy, random) from a seed fixed by its id, so a
draw from them without an explicit seed is reproducible too: a failure repeats on every run and machine, alone
or within the suite. Explicit generators come from ``seeding.py`` (``seed_for``, ``rng_for``, ``current_seed``)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from seeding import seed_for


@pytest.fixture(autouse=True)
def _global_rngs_seeded_by_test_id(request: pytest.FixtureRequest) -> None:
    seed = seed_for(request, "global")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test: hundreds of tiny step ops (decoding) run faster without hand-offs
    between threads, and timings on a busy 2-core CI box stay steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
