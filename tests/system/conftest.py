"""Fixtures of the system tests: the live tests' geometry and a fresh raw-data folder in the Tiled server's storage."""

from __future__ import annotations

import uuid

import pytest

from testing.live_scan import live_geometry


@pytest.fixture(scope="module")
def geom():
    """seed W(220) geometry cut to 32 × 32 px and 5 angles, U = 1 (the engine's sampling check passes)."""
    return live_geometry()


@pytest.fixture
def raw_dir(tiled_service):
    """A fresh folder under the test Tiled server's readable raw-data storage."""
    d = tiled_service.config.raw_path / uuid.uuid4().hex[:8]
    d.mkdir(parents=True)
    return d
