"""Strain and tilt extraction against analytic phase fields
(docs/geometry.md, Strain and tilts in the sample frame, seed Eqs 14–15)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.strain import (
    StrainOptions,
    compute_strain,
    map_to_sample_frame,
    native_lab_coordinates_m,
    phase_gradient,
    remove_phase_ramp,
)

THETA = math.radians(43.9)
Q = 5.622e10
VOX = (13.42e-9, 24.66e-9, 42.32e-9)
SHAPE = (40, 24, 20)


def _slab(shape=SHAPE, phase=None):
    """Object with unit amplitude inside an inner box (2-voxel zero border) and the given phase."""
    amp = np.zeros(shape)
    amp[2:-2, 2:-2, 2:-2] = 1.0
    return amp * np.exp(1j * phase)


def _lab():
    x, y, z = native_lab_coordinates_m(SHAPE, VOX, THETA)
    return np.broadcast_arrays(x, y, z)


@pytest.mark.parametrize("sign", [-1, 1])
def test_uniform_strain_recovered_to_1e_6(sign):
    eps = 3e-4
    x, y, z = _lab()
    phi = sign * Q * eps * z + 0.7  # φ = s Q·u with u_z = ε z, plus a global phase
    maps = compute_strain(_slab(phase=phi), voxel_size_m=VOX, theta_bragg_rad=THETA, q_bragg_per_m=Q,
                          options=StrainOptions(phase_sign=sign, remove_ramp=False))
    got = maps.eps_zz[maps.mask]
    assert got.size > 1000
    assert np.max(np.abs(got - eps)) / eps < 1e-6
    assert np.max(np.abs(maps.omega_x_rad[maps.mask])) < 1e-12
    assert np.max(np.abs(maps.omega_y_rad[maps.mask])) < 1e-12


def test_default_sign_matches_simulator_convention():
    """ρ = s·exp(−i Q·u) (simulator) with tensile ε > 0 gives ε_zz > 0 by default."""
    eps = 2e-4
    x, y, z = _lab()
    rho = _slab(phase=-Q * eps * z)
    maps = compute_strain(rho, voxel_size_m=VOX, theta_bragg_rad=THETA, q_bragg_per_m=Q,
                          options=StrainOptions(remove_ramp=False))
    assert np.nanmean(maps.eps_zz) == pytest.approx(eps, rel=1e-6)


def test_pure_tilts_recovered():
    wx, wy = 3e-4, -5e-4
    x, y, z = _lab()
    # rotation: u_z = y sin ω_x + x sin ω_y (Eq 14 definitions)
    phi = -Q * (y * math.sin(wx) + x * math.sin(wy))
    maps = compute_strain(_slab(phase=phi), voxel_size_m=VOX, theta_bragg_rad=THETA, q_bragg_per_m=Q,
                          options=StrainOptions(remove_ramp=False))
    m = maps.mask
    np.testing.assert_allclose(maps.omega_x_rad[m], wx, rtol=1e-6)
    np.testing.assert_allclose(maps.omega_y_rad[m], wy, rtol=1e-6)
    assert np.max(np.abs(maps.eps_zz[m])) < 1e-10


def test_vortex_does_not_break_derivative_away_from_core():
    """A 2π phase vortex (dislocation line along e3) plus strain: no wrap artefacts off the core."""
    eps = 3e-4
    x, y, z = _lab()
    n1, n2, n3 = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    c1, c2 = SHAPE[0] / 2 + 0.37, SHAPE[1] / 2 + 0.21
    vortex = np.arctan2((n2 - c2) * VOX[1], (n1 - c1) * VOX[0])
    phi = -Q * eps * z + vortex
    maps = compute_strain(_slab(phase=phi), voxel_size_m=VOX, theta_bragg_rad=THETA, q_bragg_per_m=Q,
                          options=StrainOptions(remove_ramp=False))
    # analytic derivative of the vortex: ∂1 = −r2/(r1²+r2²), ∂2 = r1/(r1²+r2²) (physical units)
    r1, r2 = (n1 - c1) * VOX[0], (n2 - c2) * VOX[1]
    rr = r1**2 + r2**2
    d1, d3 = -r2 / rr, 0.0
    expected = eps + (-1 / Q) * (-math.cos(THETA) * d1 + math.sin(THETA) * d3)
    dist_vox = np.hypot(n1 - c1, (n2 - c2) * VOX[1] / VOX[0])
    far = maps.mask & (dist_vox > 6)
    err = np.abs(maps.eps_zz[far] - expected[far])
    assert far.sum() > 1000
    assert err.max() < 2e-5  # discretisation only; a branch-cut jump would be ~1e-2
    # the naive gradient of the wrapped phase does jump across the branch cut
    naive = np.gradient(np.angle(_slab(phase=phi)), VOX[0], axis=0) * math.cos(THETA) / Q
    assert np.max(np.abs(naive[far])) > 1e-3


def test_ramp_removal_2d_and_3d():
    rng = np.random.default_rng(1)
    x, y, z = _lab()
    base = -Q * 1e-4 * z
    n = np.meshgrid(*(np.arange(s) - s // 2 for s in SHAPE), indexing="ij")
    kappa_vox = (0.9, -0.4, 1.3)  # rad/voxel: large ramps, > π over 3 voxels
    ramp = sum(k * a for k, a in zip(kappa_vox, n, strict=True))
    rho = _slab(phase=base + ramp + 2.0)
    fit = remove_phase_ramp(rho, voxel_size_m=1.0)
    np.testing.assert_allclose(fit.ramp_rad_per_m, np.array(kappa_vox) + np.array(
        [-Q * 1e-4 * d * e for d, e in zip(VOX, (-math.cos(THETA), 0.0, math.sin(THETA)), strict=True)]), atol=1e-9)
    s = np.abs(rho) > 0
    assert np.max(np.abs(np.angle(fit.corrected[s]))) < 1e-9
    # 2D, with physical voxel sizes and a noisy amplitude
    img = (1 + 0.1 * rng.random((50, 60))) * np.exp(1j * (2e7 * np.arange(50)[:, None] * 10e-9
                                                         - 3e7 * np.arange(60)[None, :] * 10e-9 + 1.0))
    fit2 = remove_phase_ramp(img, voxel_size_m=10e-9, support=np.ones(img.shape, bool))
    np.testing.assert_allclose(fit2.ramp_rad_per_m, (2e7, -3e7), rtol=1e-9)
    assert np.max(np.abs(np.angle(fit2.corrected))) < 1e-9


def test_ramp_removal_does_not_change_strain():
    eps = 3e-4
    x, y, z = _lab()
    n = np.meshgrid(*(np.arange(s) for s in SHAPE), indexing="ij")
    rho = _slab(phase=-Q * eps * z + 0.5 * n[0] - 0.3 * n[2])
    maps = compute_strain(rho, voxel_size_m=VOX, theta_bragg_rad=THETA, q_bragg_per_m=Q)
    # a uniform strain *is* a ramp, so after ramp removal it is gone: ε_zz → 0 everywhere
    assert np.nanmax(np.abs(maps.eps_zz)) < 1e-9


def test_gradient_matches_eq15_and_masks_edges():
    rho = np.exp(1j * 0.3 * np.arange(10))[:, None] * np.ones((1, 5))
    (g0, g1), valid = phase_gradient(rho)
    assert np.allclose(g0[1:-1], 0.3) and np.allclose(g1, 0)
    assert not valid[0].any() and not valid[:, -1].any()


def test_map_to_sample_frame_keeps_uniform_fields():
    eps, wx = 2.5e-4, 1e-4
    x, y, z = _lab()
    maps = compute_strain(_slab(phase=-Q * (eps * z + math.sin(wx) * y)), voxel_size_m=VOX,
                          theta_bragg_rad=THETA, q_bragg_per_m=Q, options=StrainOptions(remove_ramp=False))
    out = map_to_sample_frame(maps, theta_bragg_rad=THETA)
    assert out.frame == "sample"
    assert out.voxel_size_m[0] == pytest.approx(VOX[0] / math.cos(THETA))
    assert out.mask.sum() > 200
    np.testing.assert_allclose(out.eps_zz[out.mask], eps, rtol=1e-9)
    np.testing.assert_allclose(out.omega_x_rad[out.mask], wx, rtol=1e-9)
    assert np.all(np.isnan(out.eps_zz[~out.mask]))


def test_map_to_sample_frame_linear_field_positions():
    """A field linear in lab z is reproduced at the target voxel positions (checks the mapping)."""
    x, y, z = _lab()
    maps = compute_strain(_slab(phase=np.zeros(SHAPE)), voxel_size_m=VOX, theta_bragg_rad=THETA,
                          q_bragg_per_m=Q, options=StrainOptions(remove_ramp=False))
    lin = np.where(maps.mask, 1e-4 * (z / 1e-7) + 3e-5 * (x / 1e-7), np.nan)
    maps = type(maps)(**{**maps.__dict__, "eps_zz": lin})
    out = map_to_sample_frame(maps, theta_bragg_rad=THETA, min_weight=0.999)
    d = out.voxel_size_m[0]
    X, Y, Z = np.meshgrid(*(out.origin_m[i] + d * np.arange(out.eps_zz.shape[i]) for i in range(3)), indexing="ij")
    np.testing.assert_allclose(out.eps_zz[out.mask], (1e-4 * Z / 1e-7 + 3e-5 * X / 1e-7)[out.mask], atol=1e-10)


def test_bad_inputs():
    with pytest.raises(ValueError, match="complex"):
        compute_strain(np.ones(SHAPE), voxel_size_m=VOX, theta_bragg_rad=THETA, q_bragg_per_m=Q)
    with pytest.raises(ValueError, match="phase_sign"):
        StrainOptions(phase_sign=0)
    with pytest.raises(ValueError, match="3 dimensions"):
        compute_strain(np.ones((4, 4), complex), voxel_size_m=VOX, theta_bragg_rad=THETA, q_bragg_per_m=Q)


def test_amplitude_threshold_set_by_the_reference_region_only():
    """A few large-|ρ| voxels the probe never reached do not empty the strain mask of the lit crystal."""
    eps = 2e-4
    x, y, z = _lab()
    rho = _slab(phase=Q * eps * z)
    rho[3:6, 3:6, 3:6] *= 8.0                                  # unconstrained voxels, |ρ| = 8 (e.g. after long ML)
    lit = np.zeros(SHAPE, bool)
    lit[10:30] = True
    lit[3:6, 3:6, 3:6] = False
    opts = StrainOptions(phase_sign=1, remove_ramp=False, amplitude_threshold=0.3)
    kw = dict(voxel_size_m=VOX, theta_bragg_rad=THETA, q_bragg_per_m=Q, options=opts)
    plain = compute_strain(rho, **kw)
    assert plain.mask.sum() == 0 or not plain.mask[lit].any()  # threshold 2.4 > 1: the crystal drops out
    ref = compute_strain(rho, amplitude_reference=lit, **kw)
    assert ref.mask[lit].sum() > 1000
    assert np.max(np.abs(ref.eps_zz[ref.mask & lit] - eps)) / eps < 1e-6
    with pytest.raises(ValueError, match="amplitude reference"):
        compute_strain(rho, amplitude_reference=np.zeros(SHAPE, bool), **kw)
