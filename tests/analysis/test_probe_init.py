"""Initial P2 probe: interpolation of a beam-plane probe onto the oblique (r2, r3) section."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.geometry import seed_geometry
from analysis.operators.probe import probe_na_mask
from analysis.probe_init import (ProbeInitOptions, model_probe, oblique_matrix, p2_plane_coordinates_m,
                                 probe_from_perpendicular)


@pytest.fixture
def geometry():
    return seed_geometry(n_rows_px=32, n_cols_px=32, n_angles=9, rocking_step_deg=0.005, upsampling=2)


def _gaussian(v_m, h_m, sigma_v_m, sigma_h_m, centre=(0.0, 0.0)):
    return np.exp(-0.5 * (((v_m - centre[0]) / sigma_v_m) ** 2 + ((h_m - centre[1]) / sigma_h_m) ** 2)
                  + 1j * 2e5 * (v_m - centre[0]))


def test_oblique_matrix_maps_e2_to_h_and_e3_to_v(geometry):
    m = oblique_matrix(geometry)
    t = geometry.theta_bragg_rad
    np.testing.assert_allclose(m, [[0.0, -np.sin(2 * t)], [1.0, 0.0]], atol=1e-12)
    p1, p2 = p2_plane_coordinates_m(geometry)
    n2, n3 = geometry.recon_shape[1:]
    assert p1.shape == p2.shape == (n2, n3)
    assert p1[n2 // 2, n3 // 2] == 0 and p2[n2 // 2, n3 // 2] == 0


def test_gaussian_probe_is_interpolated_onto_p2(geometry):
    d = 10e-9
    n = 1024
    v = ((np.arange(n) - n // 2) * d)[:, None]
    h = ((np.arange(n) - n // 2) * d)[None, :]
    sv, sh = 1.2e-6, 0.6e-6
    perp = _gaussian(v, h, sv, sh)
    p2 = probe_from_perpendicular(perp, d, geometry, options=ProbeInitOptions(antialias=False))
    assert p2.shape == geometry.recon_shape[1:] and p2.dtype == np.complex128
    pv, ph = p2_plane_coordinates_m(geometry)
    truth = _gaussian(pv, ph, sv, sh)
    err = np.linalg.norm(p2 - truth) / np.linalg.norm(truth)
    assert err < 1e-3


def test_recentre_and_normalise(geometry):
    d = 10e-9
    n = 1024
    v = ((np.arange(n) - n // 2) * d)[:, None]
    h = ((np.arange(n) - n // 2) * d)[None, :]
    perp = np.abs(_gaussian(v, h, 1.0e-6, 0.5e-6, centre=(0.8e-6, -0.3e-6)))
    p2 = probe_from_perpendicular(perp, d, geometry, options=ProbeInitOptions(recentre=True, total_intensity=5.0))
    assert np.sum(np.abs(p2) ** 2) == pytest.approx(5.0)
    pv, ph = p2_plane_coordinates_m(geometry)
    truth = np.abs(_gaussian(pv, ph, 1.0e-6, 0.5e-6))
    c = np.vdot(truth, p2) / np.vdot(truth, truth)
    assert np.linalg.norm(p2 - c * truth) / np.linalg.norm(p2) < 0.02


def test_bad_input_is_named(geometry):
    with pytest.raises(ValueError, match="2D"):
        probe_from_perpendicular(np.ones(5), 1e-8, geometry)
    corner = np.zeros((8, 8))
    corner[0, 0] = 1.0
    with pytest.raises(ValueError, match="does not overlap"):
        probe_from_perpendicular(corner, 1e-12, geometry, options=ProbeInitOptions(antialias=False))


def test_model_probe_is_centred_and_band_limited(geometry):
    p2 = model_probe(geometry, na_v_rad=3.7e-4, na_h_rad=1.9e-4)
    n2, n3 = geometry.recon_shape[1:]
    assert p2.shape == (n2, n3) and np.all(np.isfinite(p2))
    peak = np.unravel_index(np.argmax(np.abs(p2)), p2.shape)
    assert abs(peak[0] - n2 // 2) <= 1 and abs(peak[1] - n3 // 2) <= 1
    spec = np.abs(np.fft.fft2(p2)) ** 2
    inside = probe_na_mask(geometry, 3.7e-4, 1.9e-4, factor=1.5)
    assert spec[inside].sum() > 0.9 * spec.sum()
