"""Shared fixtures: array backends, a real Tiled server on loopback (one per session)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from bluesky import RunEngine

from analysis.geometry import BraggGeometry
from devices.sim_beamline import make_sim_beamline
from devices.testing import EncodingFrameSource
from testing import TEST_API_KEY

# Fail fast instead of retrying for 45 s when a Tiled server is down (tiled's client retries for about 45 s by default).
os.environ.setdefault("TILED_RETRY_ATTEMPTS", "1")
os.environ.setdefault("TILED_RETRY_TIMEOUT", "5")



def _cupy_or_skip():
    from analysis.xp import cupy_available

    if not cupy_available():
        pytest.skip("CuPy with a CUDA device is not available on this machine (GPU tests run on a lent GPU)")
    import cupy

    return cupy


@pytest.fixture(params=["numpy", "cupy-stand-in", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module under test: NumPy; the CuPy code path on CPU (testing/fake_cupy.py, CuPy's host/device
    rules enforced); CuPy itself when a GPU is present."""
    if request.param == "numpy":
        return np
    if request.param == "cupy-stand-in":
        from testing import fake_cupy

        return fake_cupy.install(request.getfixturevalue("monkeypatch"))[0]
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


# --- RunEngine and a simulated beamline on a position-encoding frame source (devices, plans) ---
@pytest.fixture
def geometry() -> BraggGeometry:
    """Small symmetric W(220)-like geometry: 16 × 16 px, 9 angles of 0.01°."""
    return BraggGeometry(energy_kev=8.0, d_spacing_m=1.119e-10, detector_distance_m=1.4, n_rows_px=16,
                         n_cols_px=16, n_angles=9, rocking_step_deg=0.01, bragg_angle_deg=43.9, hkl=(2, 2, 0))


@pytest.fixture
def RE():
    """A real RunEngine; halted at teardown if a test left it paused."""
    re = RunEngine({}, call_returns_result=True)
    yield re
    if re.state != "idle":
        re.halt()


@pytest.fixture
def beamline(tmp_path, geometry):
    """Sim gonio, stage, monitor and Maxipix on an EncodingFrameSource (16 × 16 px)."""
    return make_sim_beamline(EncodingFrameSource((16, 16)), geometry=geometry, data_dir=tmp_path / "raw",
                             exposure_s=0.001)
