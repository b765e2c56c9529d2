"""Tilted-slab support, shrink-wrap and the probe NA mask."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.bragg.operators import apply_fourier_mask_2d, probe_na_mask
from analysis.bragg.solvers.support import (
    shrink_wrap,
    shrinkwrap_floor,
    slab_normal,
    slab_support,
    voxel_lab_coordinates_m,
)
from analysis.geometry import seed_geometry


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


def test_shrink_wrap_keeps_the_floor_of_brightest_voxels():
    """One spike 10× above a weak crystal: at 15 % only the spike survives; with a floor of k voxels the k
    brightest stay, and a zero object keeps its support instead of emptying it."""
    rng = np.random.default_rng(3)
    rho = (0.05 + 0.01 * rng.random((6, 6, 6))).astype(complex)
    rho[2, 3, 3] = 1.0
    sup = np.ones(rho.shape, bool)
    sup[0] = False
    assert shrink_wrap(rho, sup, 0.15).sum() == 1
    kept = shrink_wrap(rho, sup, 0.15, min_voxels=40)
    assert kept.sum() == 40 and not np.any(kept & ~sup)
    assert np.abs(rho[kept]).min() >= np.abs(rho[sup & ~kept]).max()
    assert shrink_wrap(rho, sup, 0.15, min_voxels=1000).sum() == sup.sum()        # never more than S
    assert shrink_wrap(np.zeros_like(rho), sup, 0.15).sum() == sup.sum()
    with pytest.raises(ValueError, match="min_voxels"):
        shrink_wrap(rho, sup, 0.15, min_voxels=0)


def test_shrinkwrap_floor_is_a_quarter_of_the_slab_and_at_least_a_3_cube():
    slab = np.zeros((20, 20, 20), bool)
    slab[:, :, 5:15] = True
    assert shrinkwrap_floor(slab) == 1000
    small = np.zeros((5, 5, 5), bool)
    small[1:4, 1:4, 1:4] = True
    small[0, 0, :] = True
    assert shrinkwrap_floor(small) == 27                                             # ¼ of 32 is 8 < 27
    assert shrinkwrap_floor(np.ones((2, 2, 2), bool)) == 8                           # never above the slab
    with pytest.raises(ValueError, match="fraction"):
        shrinkwrap_floor(slab, fraction=1.5)
