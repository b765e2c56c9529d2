"""Tilted-slab support, shrink-wrap and the probe NA mask."""

from __future__ import annotations

import numpy as np

from analysis.geometry import seed_geometry
from analysis.operators import apply_fourier_mask_2d, probe_na_mask
from analysis.solvers.support import shrink_wrap, slab_normal, slab_support, voxel_lab_coordinates_m


def test_slab_normal_and_thickness():
    np.testing.assert_allclose(slab_normal(0, 0), [0, 0, 1])
    n = slab_normal(5.5, -2.0)
    assert abs(np.linalg.norm(n) - 1) < 1e-12 and n[2] > 0.99
    g = seed_geometry(n_angles=12, upsampling=1, n_rows_px=40, n_cols_px=16)
    shape = (60, 16, 24)
    centre = np.array([30.0, 8.0, 12.0])
    s = slab_support(g, shape, centre, 0.5e-6, 0.0, 0.0)
    x, y, z = voxel_lab_coordinates_m(g, shape, centre)
    assert np.all(np.abs(z[s]) <= 0.25e-6) and np.all(np.abs(z[~s]) > 0.25e-6)
    # the voxel → lab map is a rotation: e1, e2, e3 steps have the voxel lengths
    dr = g.voxel_size_m
    np.testing.assert_allclose(np.sqrt((x[1, 0, 0] - x[0, 0, 0]) ** 2 + (z[1, 0, 0] - z[0, 0, 0]) ** 2), dr[0])
    np.testing.assert_allclose(y[0, 1, 0] - y[0, 0, 0], dr[1])


def test_shrink_wrap_threshold():
    rho = np.zeros((4, 4, 4), complex)
    rho[1, 1, 1] = 1.0
    rho[2, 2, 2] = 0.1
    rho[3, 3, 3] = 0.2
    sup = np.ones(rho.shape, bool)
    new = shrink_wrap(rho, sup, 0.15)
    assert new.sum() == 2 and new[1, 1, 1] and new[3, 3, 3]


def test_na_mask_is_a_projector():
    g = seed_geometry(n_angles=12, upsampling=3, n_rows_px=40, n_cols_px=16)
    m = probe_na_mask(g, 3.7e-4, 1.9e-4)
    assert m.shape == g.recon_shape[1:] and m[0, 0] and 0 < m.mean() < 1
    rng = np.random.default_rng(0)
    p = rng.standard_normal(m.shape) + 1j * rng.standard_normal(m.shape)
    once = apply_fourier_mask_2d(p, m)
    np.testing.assert_allclose(apply_fourier_mask_2d(once, m), once, atol=1e-12)
