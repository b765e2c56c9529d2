"""The seed's geometry numbers (docs/geometry.md, Sampling and Worked examples, seed Eq 2 and Eq 12) and detector
layout."""

import math

import numpy as np
import pytest

from analysis.geometry import (
    BraggGeometry,
    DetectorLayout,
    Roi,
    cubic_d_spacing_m,
    seed_geometry,
    wavelength_m_from_kev,
)


def test_seed_voxel_size_is_13p6_24p6_42p3_nm():
    g = seed_geometry()
    dr = [v * 1e9 for v in g.voxel_size_nyquist_m]
    assert dr == pytest.approx([13.62, 24.66, 42.32], abs=0.02)
    # FFT-friendly grid (docs/geometry.md, Sampling): N1' = 294 -> 13.42 nm
    assert g.recon_shape == (294, 160, 126)
    assert g.voxel_size_m[0] * 1e9 == pytest.approx(13.42, abs=0.01)
    # the seed's 18.9 nm sample-frame voxel is Δr1 / cosθ
    assert g.voxel_size_nyquist_m[0] / math.cos(g.theta_bragg_rad) * 1e9 == pytest.approx(18.9, abs=0.05)


def test_seed_probe_width_and_field_of_view():
    t_m = 500e-9
    w1 = seed_geometry(upsampling=1).probe_width_limit_m(t_m)
    w3 = seed_geometry(upsampling=3).probe_width_limit_m(t_m)
    assert w1 * 1e6 == pytest.approx(1.684, abs=0.005)        # "about 1.7 µm"
    assert w3 * 1e6 == pytest.approx(5.10, abs=0.01)          # 5.1 µm with U = 3
    g = seed_geometry()
    assert g.footprint_x_m(w3, t_m) * 1e6 == pytest.approx(7.88, abs=0.02)  # "as large as 7.8 µm"
    # 7 angles of 0.03° with U = 18 have the same fine step, hence the same W
    g7 = seed_geometry(n_angles=7, rocking_step_deg=0.03, upsampling=18)
    assert g7.probe_width_limit_m(t_m) == pytest.approx(w3, rel=1e-12)


def test_eq12_is_the_inverse_of_eq2():
    g = seed_geometry(upsampling=1)
    w = g.probe_width_limit_m(450e-9)
    assert g.max_rocking_step_deg(w, 450e-9) == pytest.approx(0.005, rel=1e-12)


def test_q_and_sampling_steps():
    g = seed_geometry()
    assert g.q_bragg_per_m == pytest.approx(5.622e10, rel=1e-3)
    assert g.dq_detector_per_m == pytest.approx(1.593e6, rel=1e-3)
    assert g.dq_rocking_per_m == pytest.approx(1.635e6, rel=1e-3)
    assert g.window_m[0] * 1e6 == pytest.approx(3.94, abs=0.01)
    assert g.window_m[2] * 1e6 == pytest.approx(5.33, abs=0.01)


def test_bragg_law_default_angle_and_wavelength():
    d = cubic_d_spacing_m(3.1652e-10, (2, 2, 0))
    g = BraggGeometry(energy_kev=8.0, d_spacing_m=d, detector_distance_m=1.4, n_rows_px=64,
                      n_cols_px=64, n_angles=9, rocking_step_deg=0.01)
    assert wavelength_m_from_kev(8.0) == pytest.approx(1.5498e-10, rel=1e-4)
    assert math.sin(g.theta_bragg_rad) == pytest.approx(g.wavelength_m / (2 * d), rel=1e-12)
    assert g.q_bragg_per_m == pytest.approx(2 * math.pi / d, rel=1e-12)


def test_reconstruction_frame_is_orthonormal_and_right_handed():
    ax = seed_geometry().lab_axes()
    e = np.stack([ax["e1"], ax["e2"], ax["e3"]])
    np.testing.assert_allclose(e @ e.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.cross(ax["e1"], ax["e2"]), ax["e3"], atol=1e-12)
    np.testing.assert_allclose(ax["k_out"] - ax["k_in"], 2 * math.sin(seed_geometry().theta_bragg_rad) * ax["q_hat"],
                               atol=1e-12)


def test_metadata_round_trip():
    g = seed_geometry()
    assert BraggGeometry.from_metadata(g.to_metadata()) == g


@pytest.mark.parametrize("kw,match", [
    ({"energy_kev": -1.0}, "energy_kev"),
    ({"energy_kev": float("nan")}, "energy_kev"),
    ({"rocking_step_deg": 0.0}, "rocking_step_deg"),
    ({"n_angles": 0}, "n_angles"),
    ({"upsampling": 0}, "upsampling"),
    ({"energy_kev": 1.0, "bragg_angle_deg": None}, "no Bragg reflection"),
])
def test_bad_geometry_is_refused_with_the_field_named(kw, match):
    base = dict(energy_kev=8.0, d_spacing_m=1.119e-10, detector_distance_m=1.4, n_rows_px=64,
                n_cols_px=64, n_angles=9, rocking_step_deg=0.01)
    base.update(kw)
    with pytest.raises(ValueError, match=match):
        BraggGeometry(**base)


def test_missing_geometry_metadata_is_named():
    md = seed_geometry().to_metadata()
    del md["detector_distance_m"]
    with pytest.raises(ValueError, match="detector_distance_m"):
        BraggGeometry.from_metadata(md)


def test_sampling_condition_error_says_what_to_do():
    g = seed_geometry(upsampling=1)
    with pytest.raises(ValueError, match="up-sampling"):
        g.check_sampling(probe_width_m=4e-6, thickness_m=450e-9)
    seed_geometry(upsampling=3).check_sampling(probe_width_m=4e-6, thickness_m=450e-9)


def test_maxipix_layout_masks_the_chip_gaps():
    m = DetectorLayout().mask()
    assert m.shape == (516, 516)
    assert m.sum() == 4 * 256 * 256
    assert not m[256:260, :].any() and not m[:, 256:260].any()


def test_roi_inside_and_outside():
    lay = DetectorLayout()
    r = Roi.centred(lay, 200, 160)
    assert r.shape == (200, 160)
    with pytest.raises(ValueError, match="leave"):
        Roi(row0_px=400, col0_px=0, n_rows_px=200, n_cols_px=10).check_inside(lay)
