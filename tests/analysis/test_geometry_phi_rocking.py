"""φ rocking (issue 19: "rocking about η or φ"): the innermost circle rocks instead of η.

In the out-of-plane preset φ turns about the sample's surface normal z, 11° from Q: q moves along z × Q by
|z × Q| δ per step (a fifth of an η step), mostly along the detector columns, and the engine's sheared transform
must still equal the brute-force DFT at those q-points; the strain maps take the same frame.
"""

import dataclasses
import math

import numpy as np
import pytest

from analysis.bragg.operators.fourier import FoldedFourier3D
from analysis.diffractometer import (
    asymmetric_out_of_plane,
    native_sample_coordinates_m,
    reflection_axes,
    strain_maps_sample_frame,
)
from analysis.strain import StrainOptions
from sim.sample import CrystalSample, HomogeneousDisplacement, Slab


def _phi_rocking(step_deg: float = 0.02):
    eta = asymmetric_out_of_plane(rocking_step_deg=step_deg)
    return eta, dataclasses.replace(eta, rocking_circle=1)


def test_phi_step_moves_q_along_z_cross_q_by_its_length():
    eta, phi = _phi_rocking()
    assert phi.circle_names()[0] == ("eta", "phi") and phi.motor_angles_deg()["phi"] == 10.0
    b_eta, b_phi = eta.q_basis_per_m(), phi.q_basis_per_m()
    q = b_phi.q_bragg_per_m
    assert np.allclose(q, b_eta.q_bragg_per_m, rtol=1e-12)           # same reflection, other rocking circle
    z_cross_q = np.cross([0.0, 0.0, 1.0], q)
    step = b_phi.per_step_per_m
    assert np.linalg.norm(step) == pytest.approx(math.radians(phi.rocking_step_deg) * np.linalg.norm(z_cross_q),
                                                 rel=1e-4)
    assert abs(step @ z_cross_q) == pytest.approx(np.linalg.norm(step) * np.linalg.norm(z_cross_q), rel=1e-4)
    assert abs(step @ q) < 1e-4 * np.linalg.norm(step) * np.linalg.norm(q)
    # a fifth of η's step (sin 11°), and mostly along the columns: the e2 shear dominates
    assert 0.15 < np.linalg.norm(step) / np.linalg.norm(b_eta.per_step_per_m) < 0.25
    g = phi.bragg_geometry(n_rows_px=8, n_cols_px=6, n_angles=4)
    u1, u2, u3 = g.rocking_direction
    assert abs(u2) > abs(u1) > u3 > 0.1
    assert g.recon_shape[1] > g.n_cols_px


def test_phi_rocking_forward_operator_equals_the_bruteforce_dft():
    _, phi = _phi_rocking()
    g = phi.bragg_geometry(n_rows_px=8, n_cols_px=6, n_angles=4)
    rng = np.random.default_rng(5)
    obj = rng.normal(size=g.recon_shape) + 1j * rng.normal(size=g.recon_shape)
    r = native_sample_coordinates_m(g, g.recon_shape).reshape(-1, 3)
    b = g.measured_q_basis_per_m() * 2 * math.pi
    e = np.stack([g.lab_axes()[k] for k in ("e1", "e2", "e3")])
    m1, m2, k = (np.arange(n) - n // 2 for n in (g.n_rows_px, g.n_cols_px, g.n_angles))
    q = (m1[:, None, None, None] * b[0] + m2[None, :, None, None] * b[1] + k[None, None, :, None] * b[2]) @ e
    brute = (np.exp(-1j * (q.reshape(-1, 3) @ r.T)) @ obj.ravel()).reshape(q.shape[:-1]) / math.sqrt(obj.size)
    model = FoldedFourier3D.from_geometry(g).forward(obj)
    assert np.allclose(model, brute, rtol=0, atol=1e-9 * np.abs(model).max())
    # the exact q of every pixel at each φ from xrayutilities stays on that linear grid
    q_exact = np.moveaxis(phi.q_exact_per_m(g.n_rows_px, g.n_cols_px, k * phi.rocking_step_deg), 0, 2)
    assert np.abs(q_exact - phi.q_basis_per_m().q_bragg_per_m - q).max() < 1e-3 * np.abs(q).max()


def test_phi_rocking_strain_and_tilts_in_the_reflection_frame():
    _, phi = _phi_rocking(0.05)
    g = phi.bragg_geometry(n_rows_px=32, n_cols_px=32, n_angles=12)
    truth = {"strain": 1.2e-4, "tilt_x_rad": -0.8e-4, "tilt_y_rad": 0.5e-4}
    n = reflection_axes(g) @ np.asarray(g.frame.surface_normal)
    sample = CrystalSample(slab=Slab(thickness_m=2e-6, tilt_x_deg=-math.degrees(math.asin(n[1])),
                                     tilt_y_deg=math.degrees(math.atan2(n[0], n[2]))),
                           homogeneous=HomogeneousDisplacement(**truth))
    pts = native_sample_coordinates_m(g, g.recon_shape) @ reflection_axes(g).T
    rho = sample.complex_density(pts[..., 0], pts[..., 1], pts[..., 2], q_bragg_per_m=g.q_bragg_per_m)
    maps = strain_maps_sample_frame(rho, g, options=StrainOptions(remove_ramp=False))
    assert int(maps.mask.sum()) > 100
    for name, key in (("eps_zz", "strain"), ("omega_x_rad", "tilt_x_rad"), ("omega_y_rad", "tilt_y_rad")):
        assert np.nanmax(np.abs(getattr(maps, name)[maps.mask] - truth[key])) < 1e-8, name
