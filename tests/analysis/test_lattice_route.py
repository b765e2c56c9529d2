"""The default recipe's choice of route by the R-factor on the lattice model (issue 14, points 4 and 6).

The grid object goes onto the detector lattice by the exact inverse transfer and is scored there
(analysis.bragg.pipeline.lattice_model_r_factor); the gate (lattice_route_reason) fires only for a y line scan with
a known probe, never for the raster scans of "Quality by recipe" (testing/recipe_quality.py). The truth of ptypy's
subset (tests/data/ptypy_bragg_subset.h5) is used to check the transfer, never to pick.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.bragg.operators.scan import view_grid
from analysis.bragg.ptypy_bragg import lattice_transfer, probe_p2, pxm_geometry, truth_on_grid
from analysis.bragg.scan import BraggScan
from analysis.bragg.solvers import lattice as lat_dm
from testing.ptypy_subset import subset_problem


@pytest.fixture(scope="module")
def subset():
    return subset_problem(upsampling=1)


@pytest.mark.parametrize("upsampling", [1, 3])
def test_grid_object_on_the_lattice_model_is_exact_at_any_u(subset, upsampling):
    """The truth on pxm's grid at U = 1 and U = 3 (the importer's U), carried back to the detector lattice by
    grid_to_detector_lattice and folded onto the measured planes, reproduces ptypy's frames: R 4.8×10⁻⁸ at both
    (measured 2026-12-07) with the probe made from P2; the same with the rows reversed gives R > 0.01."""
    p = subset
    g = pxm_geometry(p.case, upsampling=upsampling)
    lattice = lat_dm.DetectorLattice.from_geometry(p.geometry)
    lscan = lat_dm.lattice_scan(lattice, p.stage_xyz_m)
    grid = view_grid(g, p.stage_xyz_m, margin_vox=2)
    tr = lattice_transfer(g, p.case.theta_bragg_deg, grid.object_shape, grid.origin_vox, grid.offsets_vox)
    ext = lat_dm.grid_to_detector_lattice(truth_on_grid(p.case, tr), lattice, lscan, tr)
    assert ext.shape == (96, lscan.object_shape[1], 24 * upsampling)
    wide = lat_dm.DetectorLattice(vectors_lab_m=lattice.vectors_lab_m, view_shape=(96, 96, ext.shape[2]))
    g3 = pxm_geometry(p.case, upsampling=3)
    probe = lat_dm.lattice_probe_from_p2(wide, g3, probe_p2(p.case, g3))
    amplitudes = np.sqrt(np.moveaxis(np.asarray(p.dataset.frames, float), 1, -1))
    mask = p.dataset.detector_mask[:, :, None]
    r, s = lat_dm.fitted_r_factor(lat_dm.lattice_model_amplitudes(ext, probe, lattice, lscan), amplitudes, mask)
    assert r < 1e-6, r
    assert s == pytest.approx(1.0, rel=1e-3)
    flipped = np.roll(ext[::-1], 1, axis=0)                            # rows the wrong way round: clearly worse
    r_bad, _ = lat_dm.fitted_r_factor(lat_dm.lattice_model_amplitudes(flipped, probe, lattice, lscan),
                                      amplitudes, mask)
    assert r_bad > 0.01


def _scan(geometry, stage_xyz_m):
    from testing.bragg_sim import rocking_offsets_deg

    n = geometry.n_angles
    return BraggScan(geometry=geometry, frames=np.ones((len(stage_xyz_m), n, geometry.n_rows_px,
                                                        geometry.n_cols_px), np.float32),
                     mask=np.ones((geometry.n_rows_px, geometry.n_cols_px), bool), stage_xyz_m=stage_xyz_m,
                     rocking_offsets_deg=rocking_offsets_deg(geometry))


def test_the_gate_fires_for_a_y_line_scan_with_a_known_probe_only(subset):
    from analysis.bragg.pipeline import lattice_route_reason

    p = subset
    line = _scan(p.geometry, p.stage_xyz_m)
    assert lattice_route_reason(line, probe_known=True) is None
    assert "probe" in lattice_route_reason(line, probe_known=False)
    moved = p.stage_xyz_m.copy()
    moved[1, 0] += 1e-6                                                 # one position off the line along x
    assert "line scan" in lattice_route_reason(_scan(p.geometry, moved), probe_known=True)
    missing = dataclasses.replace(line, frame_valid=np.ones((3, 24), bool) & (np.arange(24) != 5))
    assert "frames" in lattice_route_reason(missing, probe_known=True)


def test_the_gate_never_fires_on_the_raster_cases_of_quality_by_recipe():
    """The simulated cases of docs/benchmarks.md "Quality by recipe" (testing/recipe_quality.py) are rasters: even
    with a probe file the default keeps the grid route there, so their numbers are unchanged by the rule. Their
    geometries and stage positions, as the cases build them (no frames simulated)."""
    from analysis.bragg.pipeline import lattice_route_reason
    from pxm.demo import DemoOptions, demo_geometry
    from testing.bragg_sim import raster, small_geometry

    opts = DemoOptions()
    demo = demo_geometry(opts)
    cases = {"seed-like": (small_geometry(), raster(4, 0.12e-6)),
             "engine-model": (small_geometry(), raster(4, 0.12e-6, seed=3)),
             "demo": (demo, raster(opts.n_raster, opts.raster_step_um * 1e-6, jitter=0.15, seed=2021)),
             "demo-21": (dataclasses.replace(demo, n_angles=21),
                         raster(opts.n_raster, opts.raster_step_um * 1e-6, jitter=0.15, seed=2021))}
    for name, (g, stage) in cases.items():
        reason = lattice_route_reason(_scan(g, stage), probe_known=True)
        assert reason is not None and "line scan" in reason, (name, reason)
