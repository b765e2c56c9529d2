"""Operator checks of docs/geometry.md, Operators: adjointness, brute-force DFT, fold, B/R."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.bragg.operators import (
    FoldedFourier3D,
    ProbeExtrusion,
    ShearedFourier3D,
    SubpixelShift2D,
    extrusion_slope_px,
    shear_per_index_rad,
    view_grid,
)
from analysis.geometry import BraggGeometry, cubic_d_spacing_m
from testing.operator_contract import check_adjoint, random_complex


def small_geometry(upsampling: int = 2, n_angles: int = 5, rows: int = 9, cols: int = 6) -> BraggGeometry:
    """Seed-like W(220) geometry with a tiny crop (odd and even sizes on purpose)."""
    return BraggGeometry(energy_kev=8.0, d_spacing_m=cubic_d_spacing_m(3.1652e-10, (2, 2, 0)),
                         detector_distance_m=1.4, n_rows_px=rows, n_cols_px=cols, n_angles=n_angles,
                         rocking_step_deg=0.02, upsampling=upsampling, bragg_angle_deg=43.9)


GEOS = {"U1": small_geometry(1, 6, 8, 6), "U2": small_geometry(2, 5, 9, 6), "U3": small_geometry(3, 4, 7, 5)}


def _operators():
    cases = []
    for name, g in GEOS.items():
        box = g.recon_shape
        crop = (g.n_rows_px, g.n_cols_px)
        full = ShearedFourier3D.from_geometry(g)
        cases.append((f"sheared-{name}", full, box, full.out_shape))
        fold = FoldedFourier3D.from_geometry(g)
        cases.append((f"folded-{name}", fold, box, fold.out_shape))
        ext = ProbeExtrusion.from_geometry(g, shift_px=(0.3, -0.41))
        cases.append((f"extrusion-{name}", ext, box[1:], box))
        ext2 = ProbeExtrusion(box, (0.07, 0.2), (0.1, 0.2))      # d2 != 0: general 2D path
        cases.append((f"extrusion2d-{name}", ext2, box[1:], box))
        gen = ShearedFourier3D(box, crop, (0.11, -0.05))           # tilted rocking axis (u2 != 0)
        cases.append((f"sheared-u2-{name}", gen, box, gen.out_shape))
    cases.append(("shift2d", SubpixelShift2D((7, 6), (0.37, -1.2)), (7, 6), (7, 6)))
    return cases


OPS = _operators()


@pytest.mark.parametrize("case", OPS, ids=[c[0] for c in OPS])
def test_adjoint_contract(case, xp):
    _, op, in_shape, out_shape = case
    check_adjoint(op, in_shape, out_shape, xp=xp, rtol=1e-12 if xp is np else 1e-5)


@pytest.mark.parametrize("name", list(GEOS))
def test_sheared_fourier_equals_brute_force_dft(name):
    g = GEOS[name]
    op = ShearedFourier3D.from_geometry(g)
    n1p, n2p, n3 = g.recon_shape
    n1, n2 = g.n_rows_px, g.n_cols_px
    dr = np.asarray(g.voxel_size_m)
    dq1 = g.dq_detector_per_m
    dq3 = g.dq_rocking_per_m
    u = np.asarray(g.rocking_direction)
    # physical q(m) and r(n) in the e-frame, centred indices
    n = np.stack(np.meshgrid(*(np.arange(s) - s // 2 for s in (n1p, n2p, n3)), indexing="ij"), -1).reshape(-1, 3)
    r = n * dr[None, :]
    m = np.stack(np.meshgrid(*(np.arange(s) - s // 2 for s in (n1, n2, n3)), indexing="ij"), -1).reshape(-1, 3)
    q = m[:, :1] * dq1 * np.array([1, 0, 0]) + m[:, 1:2] * dq1 * np.array([0, 1, 0]) + m[:, 2:3] * dq3 * u[None, :]
    rng = np.random.default_rng(1)
    x = random_complex(rng, (n1p, n2p, n3))
    brute = (np.exp(-1j * (q @ r.T)) @ x.reshape(-1)) / np.sqrt(n1p * n2p * n3)
    got = op.forward(x).reshape(-1)
    assert np.linalg.norm(got - brute) / np.linalg.norm(brute) < 1e-12
    # unitary on the full box when nothing is cropped
    full = ShearedFourier3D((n1p, n2p, n3), (n1p, n2p), op.shear_rad)
    np.testing.assert_allclose(np.linalg.norm(full.forward(x)), np.linalg.norm(x), rtol=1e-12)
    np.testing.assert_allclose(full.adjoint(full.forward(x)), x, atol=1e-12)


@pytest.mark.parametrize("name", list(GEOS))
def test_measured_q_basis_is_where_a_plane_wave_lands(name):
    """A plane wave e^{2πi f·r} with f = Σ_a m_a b_a (b_a: ``measured_q_basis_per_m``, e-frame, cycles/m) is
    transformed into a single peak at the centred data index m: the basis is the transform's q-points,
    rocking shear and 2π included."""
    g = GEOS[name]
    fold = FoldedFourier3D.from_geometry(g)
    n = np.stack(np.meshgrid(*(np.arange(s) - s // 2 for s in g.recon_shape), indexing="ij"), -1)
    r = n * np.asarray(g.voxel_size_m)
    for m in ([1, -2, 1], [-2, 1, -1], [0, 0, -2]):                       # inside every data box here
        f = np.asarray(m, float) @ g.measured_q_basis_per_m()
        y = np.abs(fold.forward(np.exp(2j * np.pi * (r @ f))))
        peak = np.array(np.unravel_index(np.argmax(y), y.shape)) - np.array(y.shape) // 2
        np.testing.assert_array_equal(peak, m)
        assert y.max() ** 2 > 0.99 * (y ** 2).sum()                        # all of it at that one q-point


@pytest.mark.parametrize(("name", "m0"), [("U2", 0), ("U3", 0), ("U3", 1), ("U3", 2)])
def test_folded_equals_full_on_measured_planes(name, m0):
    g = GEOS[name]
    full = ShearedFourier3D.from_geometry(g)
    fold = FoldedFourier3D.from_geometry(g, m0=m0)
    u, n3 = g.upsampling, g.recon_shape[2]
    rng = np.random.default_rng(2)
    x = random_complex(rng, g.recon_shape)
    planes = u * (np.arange(fold.n_measured) - fold.n_measured // 2) + m0 + n3 // 2
    ref = full.forward(x)[:, :, planes]
    assert np.linalg.norm(fold.forward(x) - ref) / np.linalg.norm(ref) < 1e-12
    # the adjoint is the full adjoint of a field living on measured planes only
    y = random_complex(rng, fold.out_shape)
    yy = np.zeros(full.out_shape, complex)
    yy[:, :, planes] = y
    np.testing.assert_allclose(fold.adjoint(y), full.adjoint(yy), atol=1e-12)


def test_fourier_rejects_wrong_shape():
    op = FoldedFourier3D.from_geometry(GEOS["U2"])
    with pytest.raises(ValueError, match="expected"):
        op.forward(np.zeros((3, 3, 3), complex))
    with pytest.raises(ValueError, match="upsampling"):
        FoldedFourier3D((8, 6, 10), (4, 4), (0.1, 0.0), upsampling=3)


@pytest.mark.parametrize("slope", [(0.0, 0.31), (0.13, -0.2)])
def test_projection_inverts_extrusion(slope):
    box = (11, 6, 8)
    ext = ProbeExtrusion(box, slope, (0.2, -0.35))
    rng = np.random.default_rng(3)
    p2 = random_complex(rng, box[1:])
    np.testing.assert_allclose(ext.project(ext.forward(p2)), p2, atol=1e-12)      # R B = I
    p3 = random_complex(rng, box)
    br = ext.forward(ext.project(p3))
    np.testing.assert_allclose(ext.forward(ext.project(br)), br, atol=1e-12)      # B R idempotent
    # B R is an orthogonal projector: (B R)^H = B R
    y = random_complex(rng, box)
    lhs = np.vdot(y, br)
    rhs = np.vdot(ext.forward(ext.project(y)), p3)
    assert abs(lhs - rhs) < 1e-10 * np.linalg.norm(p3) * np.linalg.norm(y)


def test_subpixel_shift_matches_integer_roll():
    rng = np.random.default_rng(4)
    x = random_complex(rng, (8, 6))
    np.testing.assert_allclose(SubpixelShift2D((8, 6), (2.0, -1.0)).forward(x), np.roll(x, (2, -1), (0, 1)),
                               atol=1e-12)
    # extrusion with an integer slope is a roll per slice
    ext = ProbeExtrusion((5, 8, 6), (0.0, 1.0))
    p3 = ext.forward(x)
    for n1 in range(5):
        np.testing.assert_allclose(p3[n1], np.roll(x, n1 - 2, axis=1), atol=1e-12)


def test_extrusion_slope_and_shear_seed_numbers():
    from analysis.geometry import seed_geometry
    g = seed_geometry()
    d = extrusion_slope_px(g)
    assert d[0] == 0.0
    assert d[1] * g.recon_shape[0] == pytest.approx(3.6, abs=0.1)    # seed geometry: 3.6 px over the box
    s1, s2 = shear_per_index_rad(g)
    assert s2 == 0.0 and s1 > 0


def test_view_grid_offsets_and_shifts_rebuild_the_position():
    g = GEOS["U2"]
    rng = np.random.default_rng(5)
    stage = np.zeros((6, 3))
    stage[:, :2] = rng.uniform(-0.4e-6, 0.4e-6, (6, 2))
    vg = view_grid(g, stage)
    d = np.asarray(extrusion_slope_px(g))
    box_c = np.asarray(g.recon_shape) // 2
    ax = g.lab_axes()
    e = np.stack([ax["e1"], ax["e2"], ax["e3"]])
    nu = (-stage @ e.T) / np.asarray(g.voxel_size_m) + vg.origin_vox
    for j in range(6):
        f = nu[j] - box_c - vg.offsets_vox[j]
        assert np.all(np.abs(f) <= 0.5 + 1e-12)
        np.testing.assert_allclose(vg.shifts_px[j], f[1:] - f[0] * d)
        assert np.all(vg.offsets_vox[j] >= 0)
        assert np.all(vg.offsets_vox[j] + g.recon_shape <= vg.object_shape)
    with pytest.raises(ValueError, match="outside the object grid"):
        view_grid(g, stage, object_shape=tuple(g.recon_shape))


def test_measured_band_mask_matches_the_sheared_band():
    """The engine's band-limit projection keeps exactly the band of docs/geometry.md, Operators
    (cf. bragg_problem.band_limit)."""
    from analysis.bragg.operators.fourier import measured_band_mask
    from testing.bragg_problem import band_limit, make_problem

    p = make_problem()
    o = p.true_object
    m = measured_band_mask(p.geometry, o.shape)
    assert np.allclose(np.fft.ifftn(np.fft.fftn(o) * m), band_limit(p, o))
    assert 0.2 < m.mean() < 1.0
    with pytest.raises(ValueError):
        measured_band_mask(p.geometry, (4, 4))
