"""fp_dfxm_scan: one event per setting, start document, validation before anything moves."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from analysis.dfxm import FPDFXMGeometry, Reflection, fp_geometry_from_metadata, fp_geometry_to_metadata
from devices.sim_beamline import make_sim_dfxm_beamline
from plans import fp_dfxm_scan, fp_diversity_settings
from plans.patterns import FPDiversitySettings
from sim.dfxm import DFXMSimulator, crystal_exit_field, diversity_scan

REFLECTION = Reflection(hkl=(0, 0, 2), d_spacing_m=2.018e-10)
SAMPLE = {"name": "BTO-film-test"}


@pytest.fixture(scope="module")
def geom():
    return FPDFXMGeometry(reflection=REFLECTION, n_px=16, upsampling=4)


@pytest.fixture(scope="module")
def source(geom):
    truth = crystal_exit_field(geom.hr_n_px * 2, geom.hr_pixel_size_m / 2, REFLECTION, 17.0, dislocations=(),
                               grain_fraction=None)
    return DFXMSimulator(truth.exit_field, geom.hr_pixel_size_m / 2, geom)


@pytest.fixture
def bl(source, tmp_path):
    return make_sim_dfxm_beamline(source, geometry=source.geometry, data_dir=tmp_path, exposure_s=0.001,
                                  simulate_exposure=False)


def _collect(RE, plan):
    docs = []
    RE(plan, lambda name, doc: docs.append((name, doc)))
    return docs


@pytest.mark.parametrize("kind", ["rock_roll", "two_theta_roll", "lens_translation"])
def test_pattern_matches_the_simulators_mapping(geom, kind):
    s = fp_diversity_settings(geom, n_side=3, step_px=3, kind=kind)
    step = 3 * geom.angle_per_freq_px_rad
    assert s.n_frames == 9
    np.testing.assert_allclose(s.shifts_rad[:, 0], np.repeat([-step, 0, step], 3), atol=1e-15)
    np.testing.assert_allclose(s.shifts_rad[:, 1], np.tile([-step, 0, step], 3), atol=1e-15)
    total = np.zeros_like(s.shifts_rad)
    image = np.zeros_like(s.shifts_rad)
    for k, v in (("rock", np.radians(s.theta_deg - s.theta_centre_deg)),
                 ("roll", np.radians(s.chi_deg - s.chi_centre_deg)),
                 ("two_theta", np.radians(s.tth_deg - s.tth_centre_deg)),
                 ("lens_translation", np.stack([s.lens_z_um, s.lens_y_um], 1) * 1e-6)):
        d = diversity_scan(k, v, geom)
        total += d.shifts_rad
        image += d.image_shifts_m
    np.testing.assert_allclose(total, s.shifts_rad, atol=1e-12)       # sim's motor→shift mapping agrees
    np.testing.assert_allclose(image, s.image_shifts_m, atol=1e-15)
    assert FPDiversitySettings.from_metadata(s.to_metadata()).shifts_rad.tolist() == s.shifts_rad.tolist()
    with pytest.raises(ValueError):
        s.theta_deg[0] = 1.0                                         # frozen arrays


def test_events_equal_settings_and_start_document(RE, bl, geom):
    s = fp_diversity_settings(geom, n_side=3, step_px=3, kind="rock_roll")
    docs = _collect(RE, fp_dfxm_scan(bl.camera, bl.lens, bl.gonio, geometry=geom, settings=s, sample=SAMPLE,
                                     exposure_s=0.01, monitors=[bl.monitor], md={"operator": "ci"}))
    start = docs[0][1]
    events = [d for n, d in docs if n == "event"]
    assert len(events) == s.n_frames == start["num_points"]
    np.testing.assert_allclose([e["data"]["gonio_theta"] for e in events], s.theta_deg)
    np.testing.assert_allclose([e["data"]["gonio_chi"] for e in events], s.chi_deg)
    np.testing.assert_allclose([e["data"]["gonio_tth"] for e in events], s.tth_deg)
    assert start["plan_name"] == "fp_dfxm_scan" and start["pxm_schema"] == "pxm-start/1"
    assert start["reflection"]["hkl"] == [0, 0, 2] and start["reflection"]["d_spacing_m"] == 2.018e-10
    assert start["reflection"]["bragg_angle_deg"] == pytest.approx(np.degrees(geom.bragg_angle_rad))
    assert fp_geometry_from_metadata(start["geometry"]) == geom
    assert start["pattern"]["shifts_rad"] == s.shifts_rad.tolist()
    assert start["pattern"]["axes"]["chi"] == "gonio_chi"
    assert start["fp"]["worst_overlap"] >= start["fp"]["min_overlap"] == 0.55
    assert start["operator"] == "ci" and start["sample"]["name"] == SAMPLE["name"]
    assert docs[-1][1]["exit_status"] == "success"


def test_geometry_and_settings_as_dicts(RE, bl, geom):
    s = fp_diversity_settings(geom, n_side=2, step_px=3, kind="lens_translation")
    docs = _collect(RE, fp_dfxm_scan(bl.camera, bl.lens, bl.gonio, geometry=fp_geometry_to_metadata(geom),
                                     settings=s.to_metadata(), sample=SAMPLE, exposure_s=0.01))
    events = [d for n, d in docs if n == "event"]
    np.testing.assert_allclose([e["data"]["lens_z"] for e in events], s.lens_z_um)


def _no_motion(bl):
    return bl.gonio.chi.position == 0.0 and bl.lens.z.position == 0.0 and not bl.backend.calls


def test_insufficient_overlap_raises_before_moving(RE, bl, geom):
    s = fp_diversity_settings(geom, n_side=3, step_px=8, kind="rock_roll")     # 8 px ≫ 0.64 ρ
    with pytest.raises(ValueError, match="do not overlap enough.*nothing was moved"):
        RE(fp_dfxm_scan(bl.camera, bl.lens, bl.gonio, geometry=geom, settings=s, sample=SAMPLE, exposure_s=0.01))
    assert _no_motion(bl)


def test_missing_reflection_raises(RE, bl, geom):
    s = fp_diversity_settings(geom, n_side=2, step_px=3)
    md = fp_geometry_to_metadata(geom)
    md["reflection"] = None
    with pytest.raises(ValueError, match="no reflection"):
        RE(fp_dfxm_scan(bl.camera, bl.lens, bl.gonio, geometry=md, settings=s, sample=SAMPLE, exposure_s=0.01))
    with pytest.raises(ValueError, match="reflection metadata"):
        RE(fp_dfxm_scan(bl.camera, bl.lens, bl.gonio, geometry=replace(geom, mode="transmission", reflection=None),
                        settings=s, sample=SAMPLE, exposure_s=0.01))
    with pytest.raises(ValueError, match="reflection metadata"):
        fp_diversity_settings(replace(geom, mode="transmission", reflection=None), n_side=2, step_px=3)
    assert _no_motion(bl)


def test_bad_inputs_raise(RE, bl, geom):
    s = fp_diversity_settings(geom, n_side=3, step_px=3, kind="two_theta_roll")
    plan = lambda **kw: fp_dfxm_scan(bl.camera, bl.lens, bl.gonio, **{  # noqa: E731
        "geometry": geom, "settings": s, "sample": SAMPLE, "exposure_s": 0.01, **kw})
    with pytest.raises(ValueError, match="limits"):
        RE(plan(settings=fp_diversity_settings(geom, n_side=3, step_px=3, chi_centre_deg=9.99)))
    with pytest.raises(ValueError, match="sample"):
        RE(plan(sample=None))
    with pytest.raises(ValueError, match="exposure_s"):
        RE(plan(exposure_s=0))
    with pytest.raises(ValueError, match="do not follow from the motor targets"):
        RE(plan(geometry=replace(geom, reflection=Reflection(hkl=(1, 1, 1), d_spacing_m=2.31e-10))))
    with pytest.raises(TypeError, match="goniometer"):
        RE(fp_dfxm_scan(bl.camera, bl.lens, bl.lens, geometry=geom, settings=s, sample=SAMPLE, exposure_s=0.01))
    with pytest.raises(ValueError, match="kind"):
        fp_diversity_settings(geom, n_side=3, step_px=3, kind="spiral")
    assert _no_motion(bl)
