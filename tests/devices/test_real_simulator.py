"""One scan with the sim engineer's BraggSimulator (skipped while sim.diffraction is absent)."""

import h5py
import numpy as np
import pytest

from analysis.geometry import Roi, seed_geometry


def test_scan_with_bragg_simulator(RE, tmp_path):
    diffraction = pytest.importorskip("sim.diffraction")
    from devices.sim_beamline import make_sim_beamline
    from plans.bragg import raster_rocking_scan
    from plans.patterns import rocking_angles_deg
    from sim.probe import KBProbe
    from sim.sample import CrystalSample

    geom = seed_geometry(upsampling=1, n_angles=3, rocking_step_deg=0.005, n_rows_px=32, n_cols_px=32)
    src = diffraction.BraggSimulator(geom, CrystalSample(), KBProbe(grid_step_m=1e-8))
    roi = Roi.centred(diffraction.DetectorLayout(), 32, 32)
    bl = make_sim_beamline(src, geometry=geom, data_dir=tmp_path, roi=roi, exposure_s=0.001)
    angles = rocking_angles_deg(geom.theta_bragg_deg, geom.rocking_step_deg, geom.n_angles)
    RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geom, positions_um=[[0, 0], [0.2, 0]],
                           angles_deg=angles, sample={"name": "W-sim"}, exposure_s=0.001))
    with h5py.File(bl.detector.file_path, "r") as f:
        frames = f["/entry/data/data"][()]
    assert frames.shape == (6, 32, 32) and frames.dtype == np.uint32
    assert [int(fr.sum()) for fr in frames] == [c["frame_sum"] for c in bl.backend.calls]
    assert frames.sum() > 0
