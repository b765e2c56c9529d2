"""Initial P2 probe: interpolation of a beam-plane probe onto the oblique (r2, r3) section."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.bragg.operators.probe import probe_na_mask
from analysis.bragg.probe_init import (
    ProbeInitOptions,
    model_probe,
    oblique_matrix,
    p2_plane_coordinates_m,
    probe_from_beam_volume,
    probe_from_perpendicular,
    probe_from_section,
)
from analysis.geometry import seed_geometry


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
    p2 = probe_from_perpendicular(perp, d, geometry, options=ProbeInitOptions())
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
        probe_from_perpendicular(corner, 1e-12, geometry, options=ProbeInitOptions())


def test_model_probe_is_centred_and_band_limited(geometry):
    p2 = model_probe(geometry, na_v_rad=3.7e-4, na_h_rad=1.9e-4)
    n2, n3 = geometry.recon_shape[1:]
    assert p2.shape == (n2, n3) and np.all(np.isfinite(p2))
    peak = np.unravel_index(np.argmax(np.abs(p2)), p2.shape)
    assert abs(peak[0] - n2 // 2) <= 1 and abs(peak[1] - n3 // 2) <= 1
    spec = np.abs(np.fft.fft2(p2)) ** 2
    inside = probe_na_mask(geometry, 3.7e-4, 1.9e-4, factor=1.5)
    assert spec[inside].sum() > 0.9 * spec.sum()


def _beam_grid_m(shape, pixel_size_m):
    """(v (NV, 1), h (1, NH)) coordinates of a beam-plane grid whose pixel N//2 is at 0."""
    (nv, nh), (dv, dh) = shape, pixel_size_m
    return ((np.arange(nv) - nv // 2) * dv)[:, None], ((np.arange(nh) - nh // 2) * dh)[None, :]


def _p2_nodes_pixel_m(geometry, fine=(4, 2)):
    """(dv, dh): rectangular beam-plane pixels such that every P2 node falls on a pixel (fine × finer)."""
    _, dr2, dr3 = geometry.voxel_size_m
    return abs(oblique_matrix(geometry)[0, 1]) * dr3 / fine[0], dr2 / fine[1]


def test_rectangular_pixels_on_the_p2_nodes_come_back_exactly(geometry):
    """Input nodes that coincide with P2's beam-plane coordinates (V pixel 4× finer than P2, H 2×): P2 is the
    analytic probe at those coordinates to float rounding: no blur, no re-centring by default."""
    d = _p2_nodes_pixel_m(geometry)
    assert abs(d[0] / d[1] - 1) > 0.1                                   # really rectangular
    v, h = _beam_grid_m((301, 96), d)
    centre = (0.25e-6, -0.4e-6)
    perp = _gaussian(v, h, 0.8e-6, 0.5e-6, centre=centre)
    p2 = probe_from_perpendicular(perp, d, geometry)
    pv, ph = p2_plane_coordinates_m(geometry)
    truth = _gaussian(pv, ph, 0.8e-6, 0.5e-6, centre=centre)
    assert np.max(np.abs(p2 - truth)) < 1e-12 * np.max(np.abs(truth))


def test_off_centre_probe_stays_off_centre_unless_recentred(geometry):
    d = (7e-9, 11e-9)
    v, h = _beam_grid_m((1001, 801), d)
    centre = (0.3e-6, -0.45e-6)
    perp = np.abs(_gaussian(v, h, 0.6e-6, 0.4e-6, centre=centre))
    pv, ph = p2_plane_coordinates_m(geometry)

    def centroid(p2):
        w = np.abs(p2) ** 2
        return np.sum(w * pv) / w.sum(), np.sum(w * ph) / w.sum()

    kept = probe_from_perpendicular(perp, d, geometry)
    truth = np.abs(_gaussian(pv, ph, 0.6e-6, 0.4e-6, centre=centre))
    assert np.linalg.norm(kept - truth) / np.linalg.norm(truth) < 2e-3
    np.testing.assert_allclose(centroid(kept), centroid(truth), atol=2e-9)
    assert abs(centroid(kept)[1] - centre[1]) < 5e-9                      # H is sampled over its whole width
    moved = probe_from_perpendicular(perp, d, geometry, options=ProbeInitOptions(recentre=True))
    assert abs(centroid(moved)[1]) < 5e-9


def test_blur_only_when_asked(geometry):
    d = _p2_nodes_pixel_m(geometry)
    v, h = _beam_grid_m((301, 96), d)
    rng = np.random.default_rng(1)
    perp = rng.normal(size=v.shape[:1] + h.shape[1:]) * np.exp(-0.5 * ((v / 0.8e-6) ** 2 + (h / 0.6e-6) ** 2))
    sharp = probe_from_perpendicular(perp, d, geometry)
    blurred = probe_from_perpendicular(perp, d, geometry, options=ProbeInitOptions(blur_px=0.4))
    pv, ph = p2_plane_coordinates_m(geometry)
    iv, ih = np.rint(pv / d[0]).astype(int) + 150, np.rint(ph / d[1]).astype(int) + 48
    np.testing.assert_allclose(sharp, perp[iv, ih], atol=1e-12)           # the nodes themselves
    assert np.linalg.norm(blurred - sharp) > 0.1 * np.linalg.norm(sharp)
    with pytest.raises(ValueError, match="blur_px"):
        ProbeInitOptions(blur_px=-1)


def test_section_on_the_p2_grid_is_used_as_is_and_resampled_otherwise(geometry):
    n2, n3 = geometry.recon_shape[1:]
    _, dr2, dr3 = geometry.voxel_size_m
    rng = np.random.default_rng(2)
    sec = rng.normal(size=(n2, n3)) + 1j * rng.normal(size=(n2, n3))
    np.testing.assert_array_equal(probe_from_section(sec, (dr2, dr3), geometry), sec)
    b = ((np.arange(2 * n2 + 1) - n2) * dr2 / 2)[:, None]                 # twice finer, odd sizes: exact nodes
    c = ((np.arange(2 * n3 + 1) - n3) * dr3 / 2)[None, :]
    fine = _gaussian(b, c, 0.9e-6, 1.1e-6, centre=(0.1e-6, 0.2e-6))
    bb = ((np.arange(n2) - n2 // 2) * dr2)[:, None]
    cc = ((np.arange(n3) - n3 // 2) * dr3)[None, :]
    np.testing.assert_allclose(probe_from_section(fine, (dr2 / 2, dr3 / 2), geometry),
                               _gaussian(bb, cc, 0.9e-6, 1.1e-6, centre=(0.1e-6, 0.2e-6)), atol=1e-12)


def test_beam_volume_extruded_along_k_in_gives_the_plane_section(geometry):
    """A 3D probe constant along p3 = k̂_i: its P2 is the 2D probe's, exactly (also beyond its p3 range)."""
    d = _p2_nodes_pixel_m(geometry)
    v, h = _beam_grid_m((301, 96), d)
    plane = _gaussian(v, h, 0.8e-6, 0.5e-6, centre=(0.1e-6, 0.0))
    vol = np.repeat(plane[:, :, None], 5, axis=2)                         # 5 planes of 10 nm: ±20 nm only
    p2 = probe_from_beam_volume(vol, (*d, 10e-9), geometry)
    np.testing.assert_allclose(p2, probe_from_perpendicular(plane, d, geometry), rtol=0, atol=1e-12)
    weight = np.array([0.5, 0.8, 1.0, 0.7, 0.4])                          # a focus: varies along the beam
    p2f = probe_from_beam_volume(vol * weight, (*d, 10e-9), geometry)
    n3 = geometry.recon_shape[2]
    ax = geometry.lab_axes()
    p3_m = (ax["k_in"] @ ax["e3"]) * (np.arange(n3) - n3 // 2) * geometry.voxel_size_m[2]
    assert np.abs(p3_m).max() > 40e-9                                     # P2 reaches past the stored planes
    w = np.interp(p3_m / 10e-9, np.arange(5) - 2, weight)                 # linear; end planes extended
    np.testing.assert_allclose(p2f, p2 * w[None, :], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="3D"):
        probe_from_beam_volume(plane, (*d, 40e-9), geometry)
