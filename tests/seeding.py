"""Deterministic randomness for property tests: the seed is a hash of the test id, never the clock."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest


def seed_for(request: pytest.FixtureRequest, salt: str = "") -> int:
    """A 32-bit seed fixed by the test's node id (same on every run and machine)."""
    return zlib.crc32(f"{request.node.nodeid}|{salt}".encode())


def rng_for(request: pytest.FixtureRequest, salt: str = "") -> np.random.Generator:
    return np.random.default_rng(seed_for(request, salt))


def current_seed(salt: str = "") -> int:
    """``seed_for`` without the ``request`` fixture: the id of the test now running (``PYTEST_CURRENT_TEST``),
    for helpers called from many tests (kernel case tables)."""
    test_id = os.environ.get("PYTEST_CURRENT_TEST", "outside pytest").rsplit(" ", 1)[0]
    return zlib.crc32(f"{test_id}|{salt}".encode())
