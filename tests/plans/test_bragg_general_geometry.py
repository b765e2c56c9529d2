"""The Bragg plan in a general diffractometer geometry: it drives and records the circles the Diffractometer
names (η rocking, φ held, detector arms ν and δ) on the sim devices, with a real RunEngine (issue 19)."""

import dataclasses

import numpy as np
import pytest

from analysis.diffractometer import asymmetric_out_of_plane
from devices.motion import SimSixCircle
from devices.sim_beamline import make_sim_beamline
from devices.testing import EncodingFrameSource
from plans.bragg import raster_rocking_scan
from plans.patterns import raster_positions_um, rocking_angles_deg
from sim.diffraction import CLASSICAL_ELECTRON_RADIUS_M
from sim.general_geometry import GeneralBraggSimulator
from sim.sample import CrystalSample, HomogeneousDisplacement, Slab
from testing.bragg_sim import small_probe
from testing.plan_checks import DocCollector, check_frames_match_events

SAMPLE = {"name": "Si-slab", "material": "Si", "thickness_m": 250e-9}
SET_DEG = {"phi": 10.0, "nu": 25.0, "delta": 80.0}          # asymmetric_out_of_plane's defaults; η = 30 rocks


def _geometry(n_px: int = 16, n_angles: int = 5):
    return asymmetric_out_of_plane().bragg_geometry(n_rows_px=n_px, n_cols_px=n_px, n_angles=n_angles)


def _scan(bl, geom, nx: int, **kw):
    pos = raster_positions_um(nx, nx, 0.3, jitter_fraction=0.0, seed=1)
    ang = rocking_angles_deg(geom.rocking_centre_deg, geom.rocking_step_deg, geom.n_angles)
    return raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geom, positions_um=pos, angles_deg=ang,
                               sample=SAMPLE, exposure_s=0.001, **kw), pos, ang


def test_plan_moves_the_named_circles_and_records_them(RE, tmp_path):
    geom = _geometry()
    bl = make_sim_beamline(EncodingFrameSource((16, 16)), geometry=geom, data_dir=tmp_path / "raw", exposure_s=0.001)
    assert isinstance(bl.gonio, SimSixCircle)
    assert bl.gonio.eta.position == pytest.approx(30.0) and bl.gonio.delta.position == pytest.approx(80.0)
    # knock the arms and φ off: the plan must put them back before the first frame
    bl.gonio.move_to({"delta": 70.0, "nu": 0.0, "phi": -3.0})
    docs = DocCollector()
    RE.subscribe(docs)
    plan, pos, ang = _scan(bl, geom, 3)
    RE(plan)
    (start,) = docs.of("start")
    assert start["motors"] == ["stage_x", "stage_y", "gonio_eta"]
    rec = start["diffractometer_angles"]
    assert rec["rocking_circle"] == "eta" and rec["rocking_centre_deg"] == pytest.approx(30.0)
    assert rec["set_deg"] == pytest.approx(SET_DEG)
    assert rec["read_deg"] == pytest.approx({"eta": 30.0, **SET_DEG})
    assert rec["axes"] == {"eta": "gonio_eta", "phi": "gonio_phi", "nu": "gonio_nu", "delta": "gonio_delta"}
    assert start["pattern"]["axes"]["theta"] == "gonio_eta"
    assert start["pattern"]["detector_arm_deg"] == pytest.approx({"nu": 25.0, "delta": 80.0})
    assert start["geometry"]["diffractometer"]["detector_circle_names"] == ["nu", "delta"]
    events = docs.of("event")
    assert len(events) == 9 * 5
    for name, value in SET_DEG.items():                              # read at every point
        assert all(ev["data"][f"gonio_{name}"] == pytest.approx(value) for ev in events)
    np.testing.assert_allclose(sorted({round(ev["data"]["gonio_eta"], 9) for ev in events}), ang, atol=1e-9)
    _, decoded = check_frames_match_events(docs, geom, theta_key="gonio_eta")
    assert all(d["arm_offset_deg"] == 0.0 for d in decoded)          # the arms were back at ν, δ for every frame
    assert {round(d["rocking_offset_deg"], 6) for d in decoded} == {round(a - 30.0, 6) for a in ang}


def test_plan_refuses_a_goniometer_without_the_named_circles(RE, tmp_path, beamline):
    geom = _geometry()
    with pytest.raises(TypeError, match="'eta'"):
        _scan(beamline, geom, 2)[0].send(None)     # beamline: θ/2θ SimGoniometer


def test_general_simulator_frames_through_the_devices(RE, tmp_path):
    """GeneralBraggSimulator as the Maxipix's frame source: the counts follow its direct sum at each η."""
    d = asymmetric_out_of_plane(rocking_step_deg=0.012, detector_distance_m=0.35)
    sim = GeneralBraggSimulator(diffractometer=d, sample=CrystalSample(
        slab=Slab(thickness_m=0.25e-6, tilt_x_deg=0.0, tilt_y_deg=0.0),
        homogeneous=HomogeneousDisplacement(strain=2e-4)), probe=small_probe(extent_m=0.6e-6),
        n_rows_px=8, n_cols_px=8, step_m=25e-9, half_extent_m=(0.35e-6,) * 3, flux_ph_per_s=1e12)
    geom = sim.geometry(n_angles=3)
    bl = make_sim_beamline(sim, geometry=geom, data_dir=tmp_path / "raw", exposure_s=0.001)
    plan, _, ang = _scan(bl, geom, 1)
    RE(plan)
    calls = bl.backend.calls
    np.testing.assert_allclose([c["rocking_offset_deg"] for c in calls], ang - d.sample_angles_deg[0], atol=1e-9)
    assert len(calls) == 3 and all(c["detector_arm_offset_deg"] == 0.0 for c in calls)
    for c in calls:
        amp = sim.amplitude(stage_xyz_m=c["stage_xyz_m"], rocking_offset_deg=c["rocking_offset_deg"])
        per_amp2 = (sim.flux_ph_per_s * CLASSICAL_ELECTRON_RADIUS_M ** 2 * (d.pixel_size_m / d.detector_distance_m) ** 2
                    * (sim.sample.structure_factor_electrons / sim.sample.unit_cell_volume_m3) ** 2)
        expected = per_amp2 * 0.001 * c["flux_scale"] * float((np.abs(amp) ** 2).sum())
        assert expected > 100
        assert c["frame_sum"] == pytest.approx(expected, abs=6 * np.sqrt(expected) + 1e-3 * expected)


def test_circle_names_default_to_the_six_circle_convention_and_are_checked():
    d = asymmetric_out_of_plane()
    assert d.circle_names() == (("eta", "phi"), ("nu", "delta"))
    assert d.motor_angles_deg() == {"eta": 30.0, "phi": 10.0, "nu": 25.0, "delta": 80.0}
    with pytest.raises(ValueError, match="sample_circle_names.*2 distinct motor names"):
        dataclasses.replace(d, sample_circle_names=("eta",))
    bad = dataclasses.replace(d, sample_circle_names=("eta", "omega"))
    with pytest.raises(ValueError, match="no circle \\['omega'\\]"):
        SimSixCircle(name="g").move_to(bad.motor_angles_deg())
