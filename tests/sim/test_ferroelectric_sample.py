"""sim.ferroelectric: c/a stripe pattern and the exit field of a strain map at a chosen reference lattice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.dfxm import Reflection
from sim.ferroelectric import VARIANT_A, VARIANT_C, ca_domain_pattern, strain_exit_field

REFLECTION = Reflection(hkl=(0, 0, 2), d_spacing_m=2.018e-10)


def test_pattern_has_the_requested_stripes_stress_and_dim_walls():
    pat = ca_domain_pattern(64, 5e-9, variants=("c", "a"), stress_bump_pa=80e6, stress_bump_center_frac=(0.25, 0.5))
    assert np.all(pat.variant[:30] == VARIANT_C) and np.all(pat.variant[34:] == VARIANT_A)
    assert pat.c_weight[0, 0] == pytest.approx(1.0) and pat.c_weight[-1, 0] == pytest.approx(0.0, abs=1e-12)
    assert pat.stress_along_g_pa.max() == pytest.approx(80e6) and pat.stress_along_g_pa[16, 32] == pytest.approx(80e6)
    wall, interior = pat.amplitude[32].mean(), pat.amplitude[10].mean()
    assert wall < 0.7 * interior


def test_exit_field_phase_ramp_is_the_strain_relative_to_the_reference():
    n = 32
    eps = np.full((n, n), 6.76e-3)
    eps[n // 2:] = -2.30e-3                                  # a stripe below a c stripe
    amp = np.ones((n, n))
    dx_m, energy_kev = 5e-9, 17.0
    field = strain_exit_field(eps, amp, dx_m, REFLECTION, energy_kev, reference_strain=6.76e-3)
    step = np.angle(field[1:] * np.conj(field[:-1]))         # phase change per row
    assert np.allclose(step[: n // 2 - 1], 0.0, atol=1e-12)   # the reference variant: no ramp (bright, centred)
    theta = REFLECTION.bragg_angle_rad(energy_kev)
    d_eps = (1 - 2.30e-3) / (1 + 6.76e-3) - 1
    expected = -REFLECTION.g_per_m * dx_m * math.cos(theta) * d_eps
    np.testing.assert_allclose(step[n // 2:], expected, rtol=1e-9)
    # the other variant's spectrum sits sin2θ·|Δε| ≈ 3.2 mrad off the pupil centre (pupil ≈ 0.6 mrad)
    wavelength_m = 2 * REFLECTION.d_spacing_m * math.sin(theta)
    assert abs(expected) * wavelength_m / (2 * math.pi * dx_m) == pytest.approx(3.2e-3, rel=0.05)


@pytest.mark.parametrize("kwargs, match", [
    ({"variants": ("c", "b")}, "variants"),
    ({"wall_width_m": 0.0}, "wall_width_m"),
    ({"stress_bump_pa": math.nan}, "stress_bump_pa"),
])
def test_bad_pattern_input_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ca_domain_pattern(32, 5e-9, **kwargs)


def test_bad_strain_input_is_named():
    amp = np.ones((8, 8))
    with pytest.raises(ValueError, match="NaN"):
        strain_exit_field(np.full((8, 8), np.nan), amp, 5e-9, REFLECTION, 17.0, reference_strain=0.0)
    with pytest.raises(ValueError, match="same 2D shape"):
        strain_exit_field(np.zeros((8, 4)), amp, 5e-9, REFLECTION, 17.0, reference_strain=0.0)
    with pytest.raises(ValueError, match="Reflection"):
        strain_exit_field(np.zeros((8, 8)), amp, 5e-9, None, 17.0, reference_strain=0.0)
