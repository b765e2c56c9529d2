"""Ground-truth sample and probe: analytic checks (no detector)."""

import dataclasses
import math

import numpy as np
import pytest

from analysis.geometry import seed_geometry
from sim import CrystalSample, Dislocation, KBProbe, SiemensStar, Slab, seed_sample, uniform_strain_sample

GEOM = seed_geometry()
Q = GEOM.q_bragg_per_m


def test_field_derivatives_match_finite_differences():
    smp = seed_sample()
    rng = np.random.default_rng(1)
    pts = rng.uniform([-1.5e-6, -1.5e-6, -0.2e-6], [1.5e-6, 1.5e-6, 0.2e-6], size=(200, 3))
    h = 1e-10
    x, y, z = pts.T
    for fn, dvec in ((smp.strain_zz, (0, 0, h)), (smp.tilt_x_rad, (0, h, 0)), (smp.tilt_y_rad, (h, 0, 0))):
        fd = (smp.displacement_z_m(x + dvec[0], y + dvec[1], z + dvec[2])
              - smp.displacement_z_m(x - dvec[0], y - dvec[1], z - dvec[2])) / (2 * h)
        an = fn(x, y, z)
        # away from the two dislocation cores the fields are smooth
        np.testing.assert_allclose(an, fd, atol=2e-6, rtol=1e-4)


def test_layer_strains_take_their_nominal_values():
    smp = dataclasses.replace(seed_sample(), dislocations=())
    n = smp.slab.normal
    T = smp.slab.thickness_m
    # mid-foil, deep in the implanted layer, far from dislocations: 3e-4
    def mid(x, y):  # point on the slab mid-plane
        return np.array([x, y, -(n[0] * x + n[1] * y) / n[2]])

    p = mid(-1.5e-6, 1.0e-6)
    assert smp.strain_zz(*p) == pytest.approx(3e-4, rel=0.02)
    # just below the top / above the bottom face: + 1.5e-3 / + 1.1e-3
    top = p + n * (T / 2 - 20e-9)
    bot = p - n * (T / 2 - 20e-9)
    assert smp.strain_zz(*top) == pytest.approx(3e-4 + 1.5e-3, rel=0.03)
    assert smp.strain_zz(*bot) == pytest.approx(3e-4 + 1.1e-3, rel=0.03)
    # outside the implanted layer (y below 1.8 − 2.8 µm − edge)
    q = mid(-1.5e-6, -1.7e-6)
    assert abs(smp.strain_zz(*q)) < 1e-5


def test_density_slab_and_grain_boundary():
    smp = seed_sample()
    n = smp.slab.normal
    T = smp.slab.thickness_m
    assert smp.density(0, 0, 0) == 1
    assert smp.density(*(n * (T / 2 + 20e-9))) == 0
    assert smp.density(*(-n * (T / 2 + 20e-9))) == 0
    assert smp.density(3.0e-6, 0, 0) == 0          # beyond the grain boundary
    assert np.allclose(n, [math.sin(math.radians(-2)) * math.cos(math.radians(5.5)),
                           -math.sin(math.radians(5.5)),
                           math.cos(math.radians(-2)) * math.cos(math.radians(5.5))])


@pytest.mark.parametrize("index, turns", [(0, 1), (1, 2)])
def test_dislocation_phase_winding_is_q_dot_b(index, turns):
    smp = seed_sample()
    d = smp.dislocations[index]
    xi, ex, ey, _, _ = d._frame()
    phi = np.linspace(0, 2 * np.pi, 721)
    r = 30e-9
    pts = np.asarray(d.point_m)[:, None] + r * (np.cos(phi) * ex[:, None] + np.sin(phi) * ey[:, None])
    rho = smp.complex_density(*pts, q_bragg_per_m=Q)
    winding = np.sum(np.angle(rho[1:] / rho[:-1]))
    b = np.asarray(d.burgers_m)
    # ρ = s e^{−iQ·u}: the phase winds by −Q·b (a multiple of 2π for a lattice vector;
    # the geometry's measured θ_B makes |Q| differ from 2π/d_220 by 0.1 %)
    assert winding == pytest.approx(-2 * np.pi * turns, rel=1e-9)
    assert Q * b[2] / (2 * np.pi) == pytest.approx(turns, rel=0.01)


def test_sample_validation_messages():
    with pytest.raises(ValueError, match="thickness_m"):
        Slab(thickness_m=-1e-6)
    with pytest.raises(ValueError, match="burgers_m"):
        Dislocation(burgers_m=(0.0, 0.0, 1e-6))
    with pytest.raises(ValueError, match="rocking_centre_offset_deg"):
        CrystalSample(rocking_centre_offset_deg=float("nan"))
    with pytest.raises(ValueError, match="strain"):
        uniform_strain_sample(strain=0.2)


def test_probe_fwhm_matches_seed_and_is_normalised():
    pr = KBProbe()
    fh, fv = pr.fwhm_m()
    assert fh == pytest.approx(400e-9, rel=0.15)
    assert fv == pytest.approx(200e-9, rel=0.15)
    uv, pv = pr._v
    uh, ph = pr._h
    assert np.sum(np.abs(pv) ** 2) * pr.grid_step_m == pytest.approx(1.0, rel=1e-9)
    assert np.sum(np.abs(ph) ** 2) * pr.grid_step_m == pytest.approx(1.0, rel=1e-9)
    # 2D: ∫|P⊥|² dA = 1 on a 4 nm grid
    a = np.arange(-2.3e-6, 2.3e-6, 4e-9)
    b = np.arange(-2.6e-6, 2.6e-6, 4e-9)
    P = pr.field_perp(a[:, None], b[None, :])
    assert np.sum(np.abs(P) ** 2) * 16e-18 == pytest.approx(1.0, rel=2e-3)
    # tails: secondary maxima well outside the central lobe carry a few % of the power
    outside = np.abs(uv) > 0.5e-6
    frac = np.sum(np.abs(pv[outside]) ** 2) * pr.grid_step_m
    assert 0.005 < frac < 0.3
    assert np.abs(pv[np.abs(uv) > 1.5e-6]).max() > 0      # extends to ~±2 µm


def test_probe_is_invariant_along_the_beam():
    pr = KBProbe()
    th = GEOM.theta_bragg_rad
    rng = np.random.default_rng(0)
    x, y, z = rng.uniform(-0.5e-6, 0.5e-6, size=(3, 100))
    k = np.array([math.cos(th), 0, -math.sin(th)])
    p0 = pr.field_3d(x, y, z, theta_bragg_rad=th)
    for t in (1e-6, -7e-6, 50e-6):
        p1 = pr.field_3d(x + t * k[0], y, z + t * k[2], theta_bragg_rad=th)
        np.testing.assert_allclose(p1, p0, atol=1e-6 * np.abs(p0).max())


def test_probe_and_star_validation():
    with pytest.raises(ValueError, match="na_h"):
        KBProbe(na_h=-1.0)
    with pytest.raises(ValueError, match="extent_v_m"):
        KBProbe(extent_v_m=0.2e-6)
    with pytest.raises(ValueError, match="n_spokes"):
        SiemensStar(n_spokes=0)


def test_siemens_star_transmission_values():
    st = SiemensStar(thickness_m=1e-6)
    lam = 1.5498e-10
    t_in = np.exp(-(2 * np.pi * st.absorption_index / lam + 1j * 2 * np.pi / lam * st.refractive_decrement) * 1e-6)
    vals = st.transmission(np.array([0.0, 0.0, 20e-6]), np.array([1e-6, 1e-6 * 0 + 1e-6, 0.0]))
    assert vals[0] == pytest.approx(t_in, rel=1e-3)       # φ = 0: cos(nφ) = 1 → spoke
    assert vals[2] == 1.0                                  # outside the star


def test_siemens_star_optics_follow_the_energy():
    """δ, β of the spokes come from xraydb at the star's energy, not gold's 8 keV values at every energy."""
    at8, at17 = SiemensStar(), SiemensStar(energy_kev=17.0)
    assert at8.refractive_decrement == pytest.approx(4.7e-5, rel=0.03)        # gold, 8 keV (Henke/CXRO ≈ 4.7e-5)
    assert at8.absorption_index == pytest.approx(4.6e-6, rel=0.05)
    assert at17.refractive_decrement < 0.3 * at8.refractive_decrement           # δ ∝ λ² away from edges
    assert SiemensStar(delta=1e-5, beta=1e-7).refractive_decrement == 1e-5      # explicit values win
    with pytest.raises(ValueError, match="Unobtainium"):
        SiemensStar(material="Unobtainium")
