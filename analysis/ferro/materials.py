"""LGD coefficient sets of cubic m3̄m parents and their registry (docs/polarization.md, Coefficient sources).

α1(T) with Curie–Weiss and Barrett terms, the AFE modulation period from the gradient
coefficients; BaTiO3, PbTiO3, SrTiO3 and PbZrO3-AFE with their sources.

Conventions (see ``docs/polarization.md``): strains and stresses are 3×3 *tensor*
components (ε_23, not γ_4 = 2ε_23). Q44 is the Voigt/Haun engineering coefficient,
γ4 = 2e23 = Q44 P2 P3, i.e. Q44 = 4 Q_2323; s44 = 4 S_2323; C44 = C_2323. SI units:
P in C m⁻², energies in J m⁻³, stress in Pa.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["LGDCoefficients", "MATERIALS", "get_material", "alpha1_j_m_per_c2", "modulation_period_m"]


@dataclass(frozen=True, kw_only=True)
class LGDCoefficients:
    """LGD coefficients of a cubic m3̄m parent, SI units (docs/polarization.md, Coefficient sources).

    α1(T) = alpha1_const + alpha1_slope·(T − T_cw) + alpha1_barrett·[coth(θ/T) − coth(θ/T_ref)];
    unused parts are zero. Q44 and s44 follow the Voigt/Haun engineering convention
    (γ4 = Q44 P2P3, docs/polarization.md, Equations). Higher-order coefficients default to zero.
    """

    name: str
    """Registry name, e.g. ``"BaTiO3"``."""
    alpha1_const_j_m_per_c2: float = 0.0
    """Temperature-independent part of α1 (J m C⁻²)."""
    alpha1_slope_j_m_per_c2_k: float = 0.0
    """Curie–Weiss slope of α1 (J m C⁻² K⁻¹)."""
    curie_weiss_temperature_k: float = 0.0
    """T_cw in α1 = slope·(T − T_cw)."""
    alpha1_barrett_j_m_per_c2: float = 0.0
    """Prefactor of the quantum-paraelectric (Barrett/Shirokov) term (J m C⁻²)."""
    barrett_temperature_k: float = 1.0
    """θ in coth(θ/T)."""
    barrett_reference_temperature_k: float = 1.0
    """T_ref in coth(θ/T_ref)."""
    alpha11_j_m5_per_c4: float = 0.0
    alpha12_j_m5_per_c4: float = 0.0
    alpha111_j_m9_per_c6: float = 0.0
    alpha112_j_m9_per_c6: float = 0.0
    alpha123_j_m9_per_c6: float = 0.0
    alpha1111_j_m13_per_c8: float = 0.0
    alpha1112_j_m13_per_c8: float = 0.0
    alpha1122_j_m13_per_c8: float = 0.0
    alpha1123_j_m13_per_c8: float = 0.0
    q11_m4_per_c2: float
    q12_m4_per_c2: float
    q44_m4_per_c2: float
    """Voigt/Haun engineering shear electrostriction: γ4 = 2e23 = Q44 P2P3."""
    c11_pa: float
    c12_pa: float
    c44_pa: float
    """Voigt C44 (σ4 = C44 γ4), equal to the tensor component C_2323."""
    gradient_sigma_j_m3_per_c2: float = 0.0
    """AFE gradient coefficient σ in −σ|∇P|² (not used per voxel; docs/polarization.md, Coefficient sources)."""
    gradient_g_j_m5_per_c2: float = 0.0
    """AFE gradient coefficient g in g|∇²P|² (not used per voxel)."""
    source: str = ""
    """Citation for the values."""
    parent_lattice_m: float | None = None
    """Lattice constant a of the cubic parent (m); d_hkl = a/|hkl| checks that results match the material."""

    def __post_init__(self) -> None:
        q11, q12, q44 = self.q11_m4_per_c2, self.q12_m4_per_c2, self.q44_m4_per_c2
        if not (q11 - q12 > 0 and q11 + 2 * q12 > 0 and q44 > 0):
            raise ValueError(
                f"LGDCoefficients {self.name!r}: need Q11−Q12 > 0, Q11+2Q12 > 0 and Q44 > 0 for the "
                f"inversions (docs/polarization.md, Equations), found Q11={q11}, Q12={q12}, Q44={q44} m⁴C⁻²")
        c11, c12, c44 = self.c11_pa, self.c12_pa, self.c44_pa
        if not (c11 - c12 > 0 and c11 + 2 * c12 > 0 and c44 > 0):
            raise ValueError(
                f"LGDCoefficients {self.name!r}: elastic constants not positive definite "
                f"(C11={c11}, C12={c12}, C44={c44} Pa); need C11>|C12|, C11+2C12>0, C44>0")


def _build_materials() -> Mapping[str, LGDCoefficients]:
    bto = LGDCoefficients(
        name="BaTiO3",
        alpha1_slope_j_m_per_c2_k=4.124e5, curie_weiss_temperature_k=388.0,
        alpha11_j_m5_per_c4=-2.097e8, alpha12_j_m5_per_c4=7.974e8,
        alpha111_j_m9_per_c6=1.294e9, alpha112_j_m9_per_c6=-1.950e9, alpha123_j_m9_per_c6=-2.500e9,
        alpha1111_j_m13_per_c8=3.863e10, alpha1112_j_m13_per_c8=2.529e10,
        alpha1122_j_m13_per_c8=1.637e10, alpha1123_j_m13_per_c8=1.367e10,
        q11_m4_per_c2=0.10, q12_m4_per_c2=-0.034, q44_m4_per_c2=0.029,
        c11_pa=1.78e11, c12_pa=0.964e11, c44_pa=1.22e11,
        source="Li, Cross, Chen, J. Appl. Phys. 98, 064101 (2005); values as in docs/polarization.md",
        parent_lattice_m=4.009e-10,   # cubic BaTiO3 just above T_C (≈4.00–4.01 Å); pxm.ferroelectric's d_002
    )
    pto = LGDCoefficients(
        name="PbTiO3",
        alpha1_slope_j_m_per_c2_k=3.8e5, curie_weiss_temperature_k=752.0,
        alpha11_j_m5_per_c4=-7.3e7, alpha12_j_m5_per_c4=7.5e8,
        alpha111_j_m9_per_c6=2.6e8, alpha112_j_m9_per_c6=6.1e8, alpha123_j_m9_per_c6=-3.7e9,
        q11_m4_per_c2=0.089, q12_m4_per_c2=-0.026, q44_m4_per_c2=0.0675,
        c11_pa=1.746e11, c12_pa=7.937e10, c44_pa=1.111e11,
        source="Haun et al., J. Appl. Phys. 62, 3331 (1987); values as in docs/polarization.md "
               "(C from s11/s12/s44 = 8.0/−2.5/9.0e-12 m²/N)",
        parent_lattice_m=3.97e-10,    # cubic PbTiO3 above T_C (Shirane, Hoshino & Suzuki, Phys. Rev. 80, 1105 (1950))
    )
    sto = LGDCoefficients(
        name="SrTiO3",
        alpha1_barrett_j_m_per_c2=4.05e7, barrett_temperature_k=54.0, barrett_reference_temperature_k=30.0,
        alpha11_j_m5_per_c4=1.70e9, alpha12_j_m5_per_c4=1.37e9,
        q11_m4_per_c2=4.57e-2, q12_m4_per_c2=-1.348e-2, q44_m4_per_c2=0.957e-2,
        c11_pa=3.36e11, c12_pa=1.07e11, c44_pa=1.27e11,
        source="Li et al., Phys. Rev. B 73, 184112 (2006), α1 after Pertsev/Shirokov; docs/polarization.md "
               "(AFD, rotostriction and flexoelectric terms not included)",
        parent_lattice_m=3.905e-10,   # cubic SrTiO3 at room temperature
    )
    a_c_m = 0.416e-9
    s_afe = 3.5  # choice: s ≈ 3.5 gives a four-pseudocubic-cell modulation (docs/polarization.md, Coefficient sources)
    afe = LGDCoefficients(
        name="PbZrO3-AFE",
        alpha1_const_j_m_per_c2=-5.54e7,
        alpha11_j_m5_per_c4=5.60e8, alpha12_j_m5_per_c4=2.89e8,
        alpha111_j_m9_per_c6=1.65e9, alpha112_j_m9_per_c6=-8.66e8, alpha123_j_m9_per_c6=3.19e10,
        q11_m4_per_c2=0.048, q12_m4_per_c2=-0.015, q44_m4_per_c2=0.047,
        c11_pa=1.56e11, c12_pa=0.96e11, c44_pa=1.27e11,
        gradient_sigma_j_m3_per_c2=s_afe * 1.75 * a_c_m**2 * 1e7,
        gradient_g_j_m5_per_c2=1.25 * a_c_m**4 * 1e7,
        source="Liu & Xu, Acta Mater. 196, 435 (2020), as in durdiev15/phase-field-modeling-"
               "antiferroelectrics; docs/polarization.md, Coefficient sources; s = 3.5 chosen here",
        parent_lattice_m=a_c_m,       # cubic PbZrO3 above T_C (≈4.16 Å)
    )
    return MappingProxyType({m.name: m for m in (bto, pto, sto, afe)})


MATERIALS: Mapping[str, LGDCoefficients] = _build_materials()
"""Read-only registry name → coefficients: BaTiO3, PbTiO3, SrTiO3, PbZrO3-AFE
(docs/polarization.md, Coefficient sources)."""


def get_material(material: str | LGDCoefficients) -> LGDCoefficients:
    """Return the coefficients for a registry name (or pass an instance through)."""
    if isinstance(material, LGDCoefficients):
        return material
    if isinstance(material, str) and material in MATERIALS:
        return MATERIALS[material]
    raise ValueError(f"material: unknown material {material!r}; known materials are "
                     f"{sorted(MATERIALS)}, or pass an LGDCoefficients instance")


def alpha1_j_m_per_c2(material: str | LGDCoefficients, temperature_k: float) -> float:
    """α1(T) in J m C⁻² (docs/polarization.md, Coefficient sources)."""
    m = get_material(material)
    if not (math.isfinite(temperature_k) and temperature_k > 0):
        raise ValueError(f"temperature_k: expected a finite positive temperature, found {temperature_k!r}")
    a1 = m.alpha1_const_j_m_per_c2 + m.alpha1_slope_j_m_per_c2_k * (temperature_k - m.curie_weiss_temperature_k)
    if m.alpha1_barrett_j_m_per_c2 != 0.0:
        th = m.barrett_temperature_k
        a1 += m.alpha1_barrett_j_m_per_c2 * (1.0 / math.tanh(th / temperature_k)
                                             - 1.0 / math.tanh(th / m.barrett_reference_temperature_k))
    return a1


def modulation_period_m(material: str | LGDCoefficients) -> float:
    """AFE modulation period 2π√(2g/σ) in metres (docs/polarization.md, Coefficient sources)."""
    m = get_material(material)
    if m.gradient_sigma_j_m3_per_c2 <= 0:
        raise ValueError(f"material {m.name!r}: no gradient coefficients σ, g; only the AFE set has them")
    return 2 * math.pi * math.sqrt(2 * m.gradient_g_j_m5_per_c2 / m.gradient_sigma_j_m3_per_c2)
