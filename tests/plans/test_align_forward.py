import pytest

from devices.sim_beamline import make_sim_beamline
from devices.testing import GaussianRockingSource
from plans.align import NoPeakFoundError, rocking_curve_align
from plans.forward import spiral_probe_scan
from plans.patterns import archimedean_spiral_um
from testing.plan_checks import DocCollector, check_frames_match_events


def test_align_finds_peak_and_moves_there(RE, tmp_path, geometry):
    bl = make_sim_beamline(GaussianRockingSource((8, 8), centre_offset_deg=0.013, sigma_deg=0.01),
                           geometry=geometry, data_dir=tmp_path, exposure_s=0.001)
    result = RE(rocking_curve_align(bl.detector, bl.gonio, centre_deg=geometry.theta_bragg_deg,
                                    step_deg=0.004, n_angles=21, exposure_s=0.001))
    centre = result.plan_result
    assert centre == pytest.approx(geometry.theta_bragg_deg + 0.013, abs=1e-3)
    assert bl.gonio.theta.position == pytest.approx(centre)


def test_align_no_peak_is_clear_error(RE, tmp_path, geometry):
    bl = make_sim_beamline(GaussianRockingSource((8, 8), centre_offset_deg=5.0), geometry=geometry,
                           data_dir=tmp_path, exposure_s=0.001)
    start = bl.gonio.theta.position
    with pytest.raises(NoPeakFoundError, match="no rocking-curve peak"):
        RE(rocking_curve_align(bl.detector, bl.gonio, centre_deg=start, step_deg=0.004, n_angles=11,
                               exposure_s=0.001))
    assert bl.gonio.theta.position == start


def test_spiral_scan(RE, beamline, geometry):
    docs = DocCollector()
    RE.subscribe(docs)
    RE(spiral_probe_scan(beamline.detector, beamline.stage, n_points=30, step_um=0.4, exposure_s=0.001,
                         energy_kev=8.0, detector_distance_m=1.4, sample={"name": "siemens-star"}))
    assert len(docs.of("event")) == 30
    check_frames_match_events(docs, geometry, theta_key=None)
    (start,) = docs.of("start")
    assert start["pattern"]["positions_um"] == archimedean_spiral_um(30, 0.4).tolist()
    assert start["geometry"]["kind"] == "transmission"
