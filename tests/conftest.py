"""Shared fixtures: array backends, a real Tiled server on loopback (one per session)."""

from __future__ import annotations

import os

import numpy as np
import pytest

# Fail fast instead of retrying for 45 s when a Tiled server is down (bluesky-tiled.md §1).
os.environ.setdefault("TILED_RETRY_ATTEMPTS", "1")
os.environ.setdefault("TILED_RETRY_TIMEOUT", "5")

TEST_API_KEY = "pxmtestkey"


def _cupy_or_skip():
    from analysis.xp import cupy_available

    if not cupy_available():
        pytest.skip("CuPy with a CUDA device is not available on this machine (GPU tests run on a lent GPU)")
    import cupy

    return cupy


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module under test: NumPy always, CuPy when a GPU is present."""
    if request.param == "numpy":
        return np
    return _cupy_or_skip()


@pytest.fixture(scope="session")
def tiled_service(tmp_path_factory):
    """A real `tiled serve` process (SQLite + files) on 127.0.0.1 for the whole session."""
    from pxm.catalog import TiledServerConfig, TiledService

    data_dir = tmp_path_factory.mktemp("tiled")
    service = TiledService(TiledServerConfig(data_dir=data_dir, api_key=TEST_API_KEY))
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def tiled_layout(tiled_service):
    """(root client, raw run catalog, processed container) of the session server."""
    from pxm.catalog import ensure_layout

    root = tiled_service.client()
    raw, processed = ensure_layout(root)
    return root, raw, processed
