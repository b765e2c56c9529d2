"""Optical constants from xraydb at the actual energy (issue 17 point 4): δ, β, μ of lens and sample materials.

Reference values: NIST SRD 126 (Hubbell & Seltzer, "X-Ray Mass Attenuation Coefficients", Table 3,
https://physics.nist.gov/PhysRefData/XrayMassCoef/), total μ/ρ with coherent scattering, in cm²/g:
Be (Z = 4) 1.124 at 8 keV, 0.2251 at 20 keV; Au (Z = 79) 118.1 at 10 keV, 78.83 at 20 keV.
δ far above the K edge (Be: 111 eV) is the free-electron value r_e λ² n_e / 2π.
"""

from __future__ import annotations

import math

import pytest

from analysis.dfxm import CRLObjective, FPDFXMGeometry, Reflection, fp_geometry_from_metadata, fp_geometry_to_metadata
from analysis.dfxm.geometry import be_refractive_decrement
from analysis.optical_constants import optical_constants

NIST_MU_RHO_CM2_PER_G = {("Be", 8.0): 1.124, ("Be", 20.0): 0.2251, ("Au", 10.0): 118.1, ("Au", 20.0): 78.83}


@pytest.mark.parametrize("material, energy_kev", sorted(NIST_MU_RHO_CM2_PER_G))
def test_mu_matches_nist_tables(material, energy_kev):
    oc = optical_constants(material, energy_kev)
    mu_rho = oc.mu_per_m / 100.0 / oc.density_g_per_cm3                      # 1/m → cm²/g
    assert mu_rho == pytest.approx(NIST_MU_RHO_CM2_PER_G[material, energy_kev], rel=0.03)


@pytest.mark.parametrize("energy_kev", [8.0, 17.0, 30.0])
def test_be_delta_is_the_free_electron_value(energy_kev):
    oc = optical_constants("Be", energy_kev, density_g_per_cm3=1.848)       # the density be_refractive_decrement uses
    assert oc.delta == pytest.approx(be_refractive_decrement(energy_kev), rel=0.01)
    assert 0 < oc.beta < 1e-3 * oc.delta                                       # a lens material: β ≪ δ


def test_crl_objective_uses_the_lens_material_at_its_energy():
    """The Be attenuation was 49.5 m⁻¹ (its 17 keV value) at every energy; it must follow the energy."""
    o17, o8 = CRLObjective(), CRLObjective(energy_kev=8.0, n_lenslets=20)
    rho = optical_constants("Be", 8.0).density_g_per_cm3
    assert o8.mu_per_m == pytest.approx(NIST_MU_RHO_CM2_PER_G["Be", 8.0] * rho * 100, rel=0.03)   # ≈ 208 m⁻¹
    # docs/fp-dfxm.md, CRL pupil
    assert o17.mu_per_m == pytest.approx(49.5, rel=0.03)
    assert o8.delta / o17.delta == pytest.approx((17.0 / 8.0) ** 2, rel=0.01)                   # δ ∝ λ²
    # the Gaussian aperture follows μ: NA_rms ∝ 1/√μ at fixed ray heights
    fixed = CRLObjective(energy_kev=8.0, n_lenslets=20, attenuation_per_m=49.5)
    assert o8.na_rms_rad == pytest.approx(fixed.na_rms_rad * math.sqrt(49.5 / o8.mu_per_m), rel=1e-9)


def test_other_lens_materials_and_bad_names():
    diamond = CRLObjective(lens_material="diamond carbon", n_lenslets=40)
    be = CRLObjective(n_lenslets=40)
    assert diamond.delta > 1.5 * be.delta and diamond.mu_per_m > be.mu_per_m
    with pytest.raises(ValueError, match="Unobtainium"):
        CRLObjective(lens_material="Unobtainium")
    bto = optical_constants("BaTiO3", 8.0, density_g_per_cm3=6.02)        # any formula with a density
    assert bto.delta > 0 and bto.mu_per_m > 1e5
    with pytest.raises(ValueError, match="density"):
        optical_constants("BaTiO3", 8.0)


def test_lens_material_survives_the_metadata_round_trip():
    geom = FPDFXMGeometry(objective=CRLObjective(lens_material="Al", n_lenslets=30),
                          reflection=Reflection(hkl=(0, 0, 2), d_spacing_m=2.018e-10))
    md = fp_geometry_to_metadata(geom)
    assert fp_geometry_from_metadata(md) == geom
    assert md["derived"]["lens_mu_per_m"] == pytest.approx(geom.objective.mu_per_m)
