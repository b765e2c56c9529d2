"""Fixtures for device tests: a RunEngine and a sim beamline on a position-encoding FrameSource."""

from __future__ import annotations

import pytest
from bluesky import RunEngine

from analysis.geometry import BraggGeometry
from devices.sim_beamline import make_sim_beamline
from devices.testing import EncodingFrameSource


@pytest.fixture
def geometry() -> BraggGeometry:
    return BraggGeometry(energy_kev=8.0, d_spacing_m=1.119e-10, detector_distance_m=1.4, n_rows_px=16,
                         n_cols_px=16, n_angles=9, rocking_step_deg=0.01, bragg_angle_deg=43.9, hkl=(2, 2, 0))


@pytest.fixture
def RE():
    re = RunEngine({}, call_returns_result=True)
    yield re
    if re.state != "idle":
        re.halt()


@pytest.fixture
def beamline(tmp_path, geometry):
    return make_sim_beamline(EncodingFrameSource((16, 16)), geometry=geometry, data_dir=tmp_path / "raw",
                             exposure_s=0.001)
