"""Generic bluesky tools read pxm's runs: BestEffortCallback, LiveTable and PeakStats on every pxm plan.

Each plan runs under a real RunEngine against the simulated devices with a BestEffortCallback (plots off)
and a LiveTable subscribed; a callback that raises would abort the run, so a successful stop document
means both coped. The start documents carry the keys those tools read (docs/start-document.md).
"""

from __future__ import annotations

import numpy as np
import pytest
from bluesky.callbacks import LiveTable
from bluesky.callbacks.best_effort import BestEffortCallback
from bluesky.callbacks.fitting import PeakStats

from analysis.dfxm import FPDFXMGeometry, Reflection
from devices.sim_beamline import make_sim_beamline, make_sim_dfxm_beamline
from devices.testing import GaussianRockingSource
from plans import (
    fp_dfxm_scan,
    fp_diversity_settings,
    raster_positions_um,
    raster_rocking_scan,
    rocking_angles_deg,
    rocking_curve_align,
    spiral_probe_scan,
)
from plans.patterns import raster_rocking_cycler
from sim.dfxm import DFXMSimulator, crystal_exit_field
from testing.plan_checks import DocCollector

STANDARD_KEYS = ("plan_name", "plan_args", "detectors", "motors", "num_points", "num_intervals", "shape", "extents",
                 "hints")
SAMPLE = {"name": "W-foil-conventions"}


def _run_with_generic_tools(RE, plan, table_fields, capsys):
    """Run ``plan`` with BEC (no plots), a LiveTable and a collector; return (documents, printed text)."""
    bec = BestEffortCallback()
    bec.disable_plots()
    docs = DocCollector()
    for cb in (bec, LiveTable(table_fields), docs):
        RE.subscribe(cb)
    RE(plan)
    (stop,) = docs.of("stop")
    assert stop["exit_status"] == "success", stop
    return docs, capsys.readouterr().out


def _check_start(start, *, n_events, shape):
    missing = [k for k in STANDARD_KEYS if k not in start]
    assert not missing, f"start document lacks {missing}"
    assert start["num_points"] == n_events == int(np.prod(start["shape"]))
    assert start["num_intervals"] == n_events - 1
    assert start["shape"] == shape
    dims = start["hints"]["dimensions"]
    assert len(start["extents"]) == len(dims)
    for fields, stream in dims:
        assert stream == "primary" and set(fields) <= set(start["motors"])
    for lo, hi in start["extents"]:
        assert np.isfinite(lo) and np.isfinite(hi)


@pytest.mark.parametrize("order", ["angle_outer", "raster_outer"])
def test_raster_rocking_scan_for_generic_tools(RE, beamline, geometry, capsys, order):
    pos = raster_positions_um(3, 2, 0.5)
    ang = rocking_angles_deg(geometry.theta_bragg_deg, geometry.rocking_step_deg, geometry.n_angles)
    plan = raster_rocking_scan(beamline.detector, beamline.stage, beamline.gonio, geometry=geometry,
                               positions_um=pos, angles_deg=ang, sample=SAMPLE, exposure_s=0.001, order=order,
                               monitors=[beamline.monitor])
    docs, out = _run_with_generic_tools(RE, plan, ["gonio_theta", "stage_x", "stage_y", "mpx_total"], capsys)
    (start,) = docs.of("start")
    events = docs.of("event")
    shape = [9, 6] if order == "angle_outer" else [6, 9]
    _check_start(start, n_events=len(events), shape=shape)
    assert len(events) == 54 == start["num_points"]
    assert start["motors"] == ["stage_x", "stage_y", "gonio_theta"]
    first_dim = start["hints"]["dimensions"][0][0]
    assert first_dim == (["gonio_theta"] if order == "angle_outer" else ["stage_x", "stage_y"])
    # events walk the grid of `shape` row-major: the slow axis changes every shape[1] events
    theta = np.array([e["data"]["gonio_theta"] for e in events]).reshape(shape)
    x_um = np.array([e["data"]["stage_x"] for e in events]).reshape(shape)
    if order == "angle_outer":
        np.testing.assert_allclose(theta, np.repeat(ang[:, None], 6, axis=1))
        np.testing.assert_allclose(x_um, np.tile(pos[:, 0], (9, 1)))
    else:
        np.testing.assert_allclose(theta, np.tile(ang, (6, 1)))
        np.testing.assert_allclose(x_um, np.repeat(pos[:, :1], 9, axis=1))
    # the trajectory rebuilds from plan_pattern* alone
    assert (start["plan_pattern_module"], start["plan_pattern"]) == ("plans.patterns", "raster_rocking_cycler")
    args = start["plan_pattern_args"]
    rebuilt = list(raster_rocking_cycler(args["x"], args["y"], args["theta"], positions_um=args["positions_um"],
                                         angles_deg=args["angles_deg"], order=args["order"]))
    assert rebuilt == [{k: e["data"][k] for k in ("stage_x", "stage_y", "gonio_theta")} for e in events]
    assert "gonio_theta" in out and "mpx_total" in out                # BEC's and LiveTable's tables printed


def test_spiral_probe_scan_for_generic_tools(RE, beamline, capsys):
    plan = spiral_probe_scan(beamline.detector, beamline.stage, n_points=12, step_um=0.4, exposure_s=0.001,
                             energy_kev=8.0, detector_distance_m=1.4, sample=SAMPLE)
    docs, out = _run_with_generic_tools(RE, plan, ["stage_x", "stage_y", "mpx_total"], capsys)
    (start,) = docs.of("start")
    events = docs.of("event")
    _check_start(start, n_events=len(events), shape=[12])
    assert start["plan_pattern"] == "inner_list_product"             # from bluesky's list_scan
    x_um = [e["data"]["stage_x"] for e in events]
    assert start["extents"][0] == [min(x_um), max(x_um)]
    assert "stage_y" in out


def test_rocking_curve_align_for_generic_tools_and_peakstats_agrees(RE, tmp_path, geometry, capsys):
    bl = make_sim_beamline(GaussianRockingSource((8, 8), centre_offset_deg=0.013, sigma_deg=0.01),
                           geometry=geometry, data_dir=tmp_path, exposure_s=0.001)
    stats = PeakStats("gonio_theta", "mpx_total")
    RE.subscribe(stats)
    step_deg = 0.004
    plan = rocking_curve_align(bl.detector, bl.gonio, centre_deg=geometry.theta_bragg_deg, step_deg=step_deg,
                               n_angles=21, exposure_s=0.001)
    docs, out = _run_with_generic_tools(RE, plan, ["gonio_theta", "mpx_total"], capsys)
    (start,) = docs.of("start")
    _check_start(start, n_events=len(docs.of("event")), shape=[21])
    centre_deg = bl.gonio.theta.position
    assert centre_deg == pytest.approx(geometry.theta_bragg_deg + 0.013, abs=1e-3)
    assert stats.max[0] == pytest.approx(centre_deg, abs=step_deg)   # bluesky's PeakStats sees the same peak
    assert stats.cen == pytest.approx(centre_deg, abs=step_deg)
    assert "mpx_total" in out


def test_fp_dfxm_scan_for_generic_tools(RE, tmp_path, capsys):
    reflection = Reflection(hkl=(0, 0, 2), d_spacing_m=2.018e-10)
    geom = FPDFXMGeometry(reflection=reflection, n_px=16, upsampling=4)
    truth = crystal_exit_field(geom.hr_n_px * 2, geom.hr_pixel_size_m / 2, reflection, 17.0, dislocations=(),
                               grain_fraction=None)
    bl = make_sim_dfxm_beamline(DFXMSimulator(truth.exit_field, geom.hr_pixel_size_m / 2, geom), geometry=geom,
                                data_dir=tmp_path, exposure_s=0.001, simulate_exposure=False)
    settings = fp_diversity_settings(geom, n_side=3, step_px=3, kind="rock_roll")
    plan = fp_dfxm_scan(bl.camera, bl.lens, bl.gonio, geometry=geom, settings=settings, sample=SAMPLE,
                        exposure_s=0.01, monitors=[bl.monitor])
    docs, out = _run_with_generic_tools(RE, plan, ["gonio_theta", "gonio_chi"], capsys)
    (start,) = docs.of("start")
    _check_start(start, n_events=len(docs.of("event")), shape=[9])
    assert start["plan_pattern"] == "inner_list_product"
    assert "gonio_chi" in out
