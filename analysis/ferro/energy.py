"""Forward maps of the LGD potential: P → e0(P), f_L(P), G(P, σ), F(P, e) (docs/polarization.md, Equations).

f_L is the standard cubic 8th-order expansion; :func:`_landau` gives its value, gradient and
Hessian for the per-voxel minimisers of :mod:`analysis.ferro.minimise`.

Conventions (see ``docs/polarization.md``): strains and stresses are 3×3 *tensor*
components (ε_23, not γ_4 = 2ε_23). Q44 is the Voigt/Haun engineering coefficient,
γ4 = 2e23 = Q44 P2 P3, i.e. Q44 = 4 Q_2323; s44 = 4 S_2323; C44 = C_2323. SI units:
P in C m⁻², energies in J m⁻³, stress in Pa.
"""

from __future__ import annotations

import itertools
from typing import Any

from analysis.ferro.materials import LGDCoefficients, alpha1_j_m_per_c2, get_material
from analysis.ferro.tensors import _c_tensor, _q_tensor, _s_tensor
from analysis.xp import Array, array_module

__all__ = ["spontaneous_strain", "landau_energy_j_per_m3", "gibbs_energy_j_per_m3", "helmholtz_energy_j_per_m3"]


def _perms(exps: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    return sorted({(a, b, c) for a, b, c in itertools.permutations(exps)})


def _monomials(m: LGDCoefficients, temperature_k: float) -> list[tuple[float, tuple[int, int, int]]]:
    """f_L as Σ c·P1^a P2^b P3^c (standard cubic 8th-order expansion, docs/polarization.md, Coefficient sources)."""
    terms = [
        (alpha1_j_m_per_c2(m, temperature_k), (2, 0, 0)),
        (m.alpha11_j_m5_per_c4, (4, 0, 0)), (m.alpha12_j_m5_per_c4, (2, 2, 0)),
        (m.alpha111_j_m9_per_c6, (6, 0, 0)), (m.alpha112_j_m9_per_c6, (4, 2, 0)),
        (m.alpha123_j_m9_per_c6, (2, 2, 2)),
        (m.alpha1111_j_m13_per_c8, (8, 0, 0)), (m.alpha1112_j_m13_per_c8, (6, 2, 0)),
        (m.alpha1122_j_m13_per_c8, (4, 4, 0)), (m.alpha1123_j_m13_per_c8, (4, 2, 2)),
    ]
    return [(c, e) for c, base in terms if c != 0.0 for e in _perms(base)]


def _landau(p: Array, monos: list, order: int) -> tuple[Array, Any, Any]:
    """Value, gradient (...,3) and Hessian (...,3,3) of f_L; order 0/1/2 limits what is computed."""
    xp = array_module(p)
    pw = [[xp.ones_like(p[..., i])] for i in range(3)]
    for i in range(3):
        for _ in range(8):
            pw[i].append(pw[i][-1] * p[..., i])
    f = xp.zeros_like(p[..., 0])
    g = xp.zeros_like(p) if order >= 1 else None
    h = xp.zeros(p.shape + (3,), dtype=p.dtype) if order >= 2 else None
    for c, e in monos:
        f = f + c * pw[0][e[0]] * pw[1][e[1]] * pw[2][e[2]]
        if order >= 1:
            assert g is not None                              # allocated for order >= 1
            for i in range(3):
                if e[i] == 0:
                    continue
                d = list(e)
                d[i] -= 1
                g[..., i] += c * e[i] * pw[0][d[0]] * pw[1][d[1]] * pw[2][d[2]]
                if order >= 2:
                    assert h is not None                      # allocated for order >= 2
                    for j in range(i, 3):
                        if d[j] == 0:
                            continue
                        dd = list(d)
                        dd[j] -= 1
                        v = c * e[i] * d[j] * pw[0][dd[0]] * pw[1][dd[1]] * pw[2][dd[2]]
                        h[..., i, j] += v
                        if j != i:
                            h[..., j, i] += v
    return f, g, h


def _as_p(p: Any, name: str = "p_c_per_m2") -> Array:
    xp = array_module(p)
    p = xp.asarray(p, dtype=xp.float64)
    if p.ndim < 1 or p.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (..., 3) in C/m², found {tuple(p.shape)}")
    return p


def spontaneous_strain(p_c_per_m2: Array, material: str | LGDCoefficients) -> Array:
    """Stress-free spontaneous strain e0_ij = Q_ijkl P_k P_l, tensor components (..., 3, 3)
    (docs/polarization.md, Equations).

    e11 = Q11P1² + Q12(P2²+P3²) and cyclic; e23 = ½Q44 P2P3 (γ4 = Q44 P2P3).
    """
    p = _as_p(p_c_per_m2)
    xp = array_module(p)
    q = xp.asarray(_q_tensor(get_material(material)))
    return xp.einsum("ijkl,...k,...l->...ij", q, p, p)


def landau_energy_j_per_m3(p_c_per_m2: Array, material: str | LGDCoefficients,
                           temperature_k: float = 298.0) -> Array:
    """Stress-free Landau energy f_L(P) in J m⁻³ (docs/polarization.md, Equations and Coefficient sources)."""
    p = _as_p(p_c_per_m2)
    return _landau(p, _monomials(get_material(material), temperature_k), 0)[0]


def gibbs_energy_j_per_m3(p_c_per_m2: Array, stress_pa: Array, material: str | LGDCoefficients,
                          temperature_k: float = 298.0) -> Array:
    """G(P, σ) = f_L(P) − ½σ:S:σ − σ:Q:PP in J m⁻³; σ as tensor components (..., 3, 3)
    (docs/polarization.md, Equations).
    """
    m = get_material(material)
    p = _as_p(p_c_per_m2)
    xp = array_module(p, stress_pa)
    sig = xp.asarray(stress_pa, dtype=xp.float64)
    e0 = spontaneous_strain(p, m)
    s = xp.asarray(_s_tensor(m))
    elastic = 0.5 * xp.einsum("...ij,ijkl,...kl->...", sig, s, sig)
    return landau_energy_j_per_m3(p, m, temperature_k) - elastic - xp.einsum("...ij,...ij->...", sig, e0)


def helmholtz_energy_j_per_m3(p_c_per_m2: Array, strain: Array, material: str | LGDCoefficients,
                              temperature_k: float = 298.0) -> Array:
    """F(P, e) = f_L(P) + ½(e − e0(P)):C:(e − e0(P)) in J m⁻³; e tensor (..., 3, 3)
    (docs/polarization.md, Equations).
    """
    m = get_material(material)
    p = _as_p(p_c_per_m2)
    xp = array_module(p, strain)
    d = xp.asarray(strain, dtype=xp.float64) - spontaneous_strain(p, m)
    c = xp.asarray(_c_tensor(m))
    return landau_energy_j_per_m3(p, m, temperature_k) + 0.5 * xp.einsum("...ij,ijkl,...kl->...", d, c, d)
