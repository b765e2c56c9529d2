"""Cubic rank-4 tensors (Q, S, C), compliances and reflection directions (docs/polarization.md, Equations).

Conventions (see ``docs/polarization.md``): strains and stresses are 3×3 *tensor*
components (ε_23, not γ_4 = 2ε_23). Q44 is the Voigt/Haun engineering coefficient,
γ4 = 2e23 = Q44 P2 P3, i.e. Q44 = 4 Q_2323; s44 = 4 S_2323; C44 = C_2323. SI units:
P in C m⁻², energies in J m⁻³, stress in Pa.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analysis.ferro.materials import LGDCoefficients, get_material
from analysis.xp import Array, array_module

__all__ = ["compliance_voigt_per_pa", "directional_compliance_per_pa", "reflection_unit_vector", "projected_strain"]


def _cubic_tensor(t11: float, t12: float, t44_tensor: float) -> np.ndarray:
    """Rank-4 cubic tensor with T_iiii=t11, T_iijj=t12, T_ijij=T_ijji=t44_tensor."""
    t = np.zeros((3, 3, 3, 3))
    for i in range(3):
        for j in range(3):
            if i == j:
                t[i, i, i, i] = t11
            else:
                t[i, i, j, j] = t12
                t[i, j, i, j] = t44_tensor
                t[i, j, j, i] = t44_tensor
    return t


def _q_tensor(m: LGDCoefficients) -> np.ndarray:
    # Q_2323 = Q44/4 because γ4 = 2e23 = (Q_2323 + Q_2332)·2·P2P3 = Q44 P2P3 (Voigt/Haun, docs/polarization.md,
    # Equations)
    return _cubic_tensor(m.q11_m4_per_c2, m.q12_m4_per_c2, m.q44_m4_per_c2 / 4.0)


def compliance_voigt_per_pa(material: str | LGDCoefficients) -> tuple[float, float, float]:
    """Return (s11, s12, s44) in Pa⁻¹ from C11, C12, C44 (cubic inversion; s44 = 1/C44)."""
    m = get_material(material)
    c11, c12, c44 = m.c11_pa, m.c12_pa, m.c44_pa
    den = (c11 - c12) * (c11 + 2 * c12)
    return (c11 + c12) / den, -c12 / den, 1.0 / c44


def _s_tensor(m: LGDCoefficients) -> np.ndarray:
    s11, s12, s44 = compliance_voigt_per_pa(m)
    return _cubic_tensor(s11, s12, s44 / 4.0)


def _c_tensor(m: LGDCoefficients) -> np.ndarray:
    return _cubic_tensor(m.c11_pa, m.c12_pa, m.c44_pa)


def reflection_unit_vector(hkl: Sequence[float] | None) -> np.ndarray:
    """Unit vector ĝ = (h, k, l)/|hkl| in the parent cubic frame."""
    if hkl is None:
        raise ValueError("hkl: reflection metadata missing; pass the reflection (h, k, l) in the parent "
                         "cubic frame, e.g. hkl=(0, 0, 2) for an ε_zz map from the 002 reflection")
    g = np.asarray(hkl, dtype=float)
    if g.shape != (3,) or not np.all(np.isfinite(g)):
        raise ValueError(f"hkl: expected three finite Miller indices (h, k, l), found {hkl!r}")
    n = float(np.linalg.norm(g))
    if n == 0.0:
        raise ValueError(f"hkl: zero reflection {tuple(hkl)}; the reflection defines the strain direction "
                         "and cannot be (0, 0, 0)")
    return g / n


def directional_compliance_per_pa(material: str | LGDCoefficients, hkl: Sequence[float]) -> float:
    """s_gg = 1/E_g = s11 − 2(s11 − s12 − ½s44)(g1²g2² + g2²g3² + g3²g1²) (docs/polarization.md, Equations)."""
    s11, s12, s44 = compliance_voigt_per_pa(material)
    g = reflection_unit_vector(hkl)
    j = g[0] ** 2 * g[1] ** 2 + g[1] ** 2 * g[2] ** 2 + g[2] ** 2 * g[0] ** 2
    return s11 - 2.0 * (s11 - s12 - 0.5 * s44) * j


def projected_strain(strain: Array, hkl: Sequence[float]) -> Array:
    """ε_g = ĝ·e·ĝ for a tensor strain (..., 3, 3) and reflection hkl."""
    xp = array_module(strain)
    g = xp.asarray(reflection_unit_vector(hkl))
    return xp.einsum("i,...ij,j->...", g, xp.asarray(strain), g)
