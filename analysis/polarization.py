"""Polarization from strain with Landau–Ginzburg–Devonshire (LGD) potentials.

Implements section 2 of ``fp-dfxm-and-polarization.md`` (the polarization spec) for a cubic
m3̄m parent with stress-free spontaneous strain:

* forward maps P → e0(P) (§2.1) and P → f_L, Gibbs G(P, σ) and Helmholtz F(P, e) (§2.1);
* :func:`invert_full_strain` — closed-form P from all six strain components (§2.2), P up
  to a global sign that is returned explicitly;
* :func:`invert_reflections` — per-voxel, vectorised minimisation of
  W(P) = f_L + ½ rᵀA⁻¹r (§2.2, one or several reflections, unknown local stress);
* :func:`polarization_from_strain_maps` — the one-reflection case on an ε_g map such as
  :attr:`analysis.strain.StrainMaps.eps_zz`.

Conventions (see ``docs/polarization.md``): strains and stresses are 3×3 *tensor*
components (ε_23, not γ_4 = 2ε_23). Q44 is the Voigt/Haun engineering coefficient,
γ4 = 2e23 = Q44 P2 P3, i.e. Q44 = 4 Q_2323; s44 = 4 S_2323; C44 = C_2323. SI units:
P in C m⁻², energies in J m⁻³, stress in Pa.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from analysis.xp import array_module

__all__ = [
    "LGDCoefficients",
    "MATERIALS",
    "get_material",
    "InversionOptions",
    "FullStrainInversion",
    "ReflectionInversion",
    "alpha1_j_m_per_c2",
    "landau_energy_j_per_m3",
    "spontaneous_strain",
    "gibbs_energy_j_per_m3",
    "helmholtz_energy_j_per_m3",
    "compliance_voigt_per_pa",
    "directional_compliance_per_pa",
    "reflection_unit_vector",
    "projected_strain",
    "equilibrium_polarization",
    "spontaneous_polarization_c_per_m2",
    "invert_full_strain",
    "invert_reflections",
    "polarization_from_strain_maps",
    "modulation_period_m",
]


# --------------------------------------------------------------------------- coefficients


@dataclass(frozen=True, kw_only=True)
class LGDCoefficients:
    """LGD coefficients of a cubic m3̄m parent, SI units (spec §2.4).

    α1(T) = alpha1_const + alpha1_slope·(T − T_cw) + alpha1_barrett·[coth(θ/T) − coth(θ/T_ref)];
    unused parts are zero. Q44 and s44 follow the Voigt/Haun engineering convention
    (γ4 = Q44 P2P3, spec §2.1). Higher-order coefficients default to zero.
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
    """AFE gradient coefficient σ in −σ|∇P|² (not used per voxel; spec §2.4)."""
    gradient_g_j_m5_per_c2: float = 0.0
    """AFE gradient coefficient g in g|∇²P|² (not used per voxel)."""
    source: str = ""
    """Citation for the values."""

    def __post_init__(self) -> None:
        q11, q12, q44 = self.q11_m4_per_c2, self.q12_m4_per_c2, self.q44_m4_per_c2
        if not (q11 - q12 > 0 and q11 + 2 * q12 > 0 and q44 > 0):
            raise ValueError(
                f"LGDCoefficients {self.name!r}: need Q11−Q12 > 0, Q11+2Q12 > 0 and Q44 > 0 for the "
                f"inversions (spec §2.2), found Q11={q11}, Q12={q12}, Q44={q44} m⁴C⁻²")
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
        source="Li, Cross, Chen, J. Appl. Phys. 98, 064101 (2005); values as in spec §2.4",
    )
    pto = LGDCoefficients(
        name="PbTiO3",
        alpha1_slope_j_m_per_c2_k=3.8e5, curie_weiss_temperature_k=752.0,
        alpha11_j_m5_per_c4=-7.3e7, alpha12_j_m5_per_c4=7.5e8,
        alpha111_j_m9_per_c6=2.6e8, alpha112_j_m9_per_c6=6.1e8, alpha123_j_m9_per_c6=-3.7e9,
        q11_m4_per_c2=0.089, q12_m4_per_c2=-0.026, q44_m4_per_c2=0.0675,
        c11_pa=1.746e11, c12_pa=7.937e10, c44_pa=1.111e11,
        source="Haun et al., J. Appl. Phys. 62, 3331 (1987); values as in spec §2.4 "
               "(C from s11/s12/s44 = 8.0/−2.5/9.0e-12 m²/N)",
    )
    sto = LGDCoefficients(
        name="SrTiO3",
        alpha1_barrett_j_m_per_c2=4.05e7, barrett_temperature_k=54.0, barrett_reference_temperature_k=30.0,
        alpha11_j_m5_per_c4=1.70e9, alpha12_j_m5_per_c4=1.37e9,
        q11_m4_per_c2=4.57e-2, q12_m4_per_c2=-1.348e-2, q44_m4_per_c2=0.957e-2,
        c11_pa=3.36e11, c12_pa=1.07e11, c44_pa=1.27e11,
        source="Li et al., Phys. Rev. B 73, 184112 (2006), α1 after Pertsev/Shirokov; spec §2.4 "
               "(AFD, rotostriction and flexoelectric terms not included)",
    )
    a_c_m = 0.416e-9
    s_afe = 3.5  # choice: s ≈ 3.5 gives a four-pseudocubic-cell modulation (spec §2.4 note)
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
               "antiferroelectrics; spec §2.4; s = 3.5 chosen here",
    )
    return MappingProxyType({m.name: m for m in (bto, pto, sto, afe)})


MATERIALS: Mapping[str, LGDCoefficients] = _build_materials()
"""Read-only registry name → coefficients: BaTiO3, PbTiO3, SrTiO3, PbZrO3-AFE (spec §2.4)."""


def get_material(material: str | LGDCoefficients) -> LGDCoefficients:
    """Return the coefficients for a registry name (or pass an instance through)."""
    if isinstance(material, LGDCoefficients):
        return material
    if isinstance(material, str) and material in MATERIALS:
        return MATERIALS[material]
    raise ValueError(f"material: unknown material {material!r}; known materials are "
                     f"{sorted(MATERIALS)}, or pass an LGDCoefficients instance")


def alpha1_j_m_per_c2(material: str | LGDCoefficients, temperature_k: float) -> float:
    """α1(T) in J m C⁻² (spec §2.4 table)."""
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
    """AFE modulation period 2π√(2g/σ) in metres (spec §2.4 note)."""
    m = get_material(material)
    if m.gradient_sigma_j_m3_per_c2 <= 0:
        raise ValueError(f"material {m.name!r}: no gradient coefficients σ, g; only the AFE set has them")
    return 2 * math.pi * math.sqrt(2 * m.gradient_g_j_m5_per_c2 / m.gradient_sigma_j_m3_per_c2)


def _perms(exps: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    return sorted(set(itertools.permutations(exps)))


def _monomials(m: LGDCoefficients, temperature_k: float) -> list[tuple[float, tuple[int, int, int]]]:
    """f_L as Σ c·P1^a P2^b P3^c (standard cubic 8th-order expansion, spec §2.4)."""
    terms = [
        (alpha1_j_m_per_c2(m, temperature_k), (2, 0, 0)),
        (m.alpha11_j_m5_per_c4, (4, 0, 0)), (m.alpha12_j_m5_per_c4, (2, 2, 0)),
        (m.alpha111_j_m9_per_c6, (6, 0, 0)), (m.alpha112_j_m9_per_c6, (4, 2, 0)),
        (m.alpha123_j_m9_per_c6, (2, 2, 2)),
        (m.alpha1111_j_m13_per_c8, (8, 0, 0)), (m.alpha1112_j_m13_per_c8, (6, 2, 0)),
        (m.alpha1122_j_m13_per_c8, (4, 4, 0)), (m.alpha1123_j_m13_per_c8, (4, 2, 2)),
    ]
    return [(c, e) for c, base in terms if c != 0.0 for e in _perms(base)]


def _landau(p: Any, monos: list, order: int) -> tuple[Any, Any, Any]:
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
            for i in range(3):
                if e[i] == 0:
                    continue
                d = list(e)
                d[i] -= 1
                g[..., i] += c * e[i] * pw[0][d[0]] * pw[1][d[1]] * pw[2][d[2]]
                if order >= 2:
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


# --------------------------------------------------------------------------- tensors


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
    # Q_2323 = Q44/4 because γ4 = 2e23 = (Q_2323 + Q_2332)·2·P2P3 = Q44 P2P3 (Voigt/Haun, spec §2.1)
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
    """s_gg = 1/E_g = s11 − 2(s11 − s12 − ½s44)(g1²g2² + g2²g3² + g3²g1²) (spec §2.2)."""
    s11, s12, s44 = compliance_voigt_per_pa(material)
    g = reflection_unit_vector(hkl)
    j = g[0] ** 2 * g[1] ** 2 + g[1] ** 2 * g[2] ** 2 + g[2] ** 2 * g[0] ** 2
    return s11 - 2.0 * (s11 - s12 - 0.5 * s44) * j


# --------------------------------------------------------------------------- forward maps


def _as_p(p: Any, name: str = "p_c_per_m2") -> Any:
    xp = array_module(p)
    p = xp.asarray(p, dtype=xp.float64)
    if p.ndim < 1 or p.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (..., 3) in C/m², found {tuple(p.shape)}")
    return p


def spontaneous_strain(p_c_per_m2: Any, material: str | LGDCoefficients) -> Any:
    """Stress-free spontaneous strain e0_ij = Q_ijkl P_k P_l, tensor components (..., 3, 3) (spec §2.1).

    e11 = Q11P1² + Q12(P2²+P3²) and cyclic; e23 = ½Q44 P2P3 (γ4 = Q44 P2P3).
    """
    p = _as_p(p_c_per_m2)
    xp = array_module(p)
    q = xp.asarray(_q_tensor(get_material(material)))
    return xp.einsum("ijkl,...k,...l->...ij", q, p, p)


def landau_energy_j_per_m3(p_c_per_m2: Any, material: str | LGDCoefficients,
                           temperature_k: float = 298.0) -> Any:
    """Stress-free Landau energy f_L(P) in J m⁻³ (spec §2.1, coefficients §2.4)."""
    p = _as_p(p_c_per_m2)
    return _landau(p, _monomials(get_material(material), temperature_k), 0)[0]


def gibbs_energy_j_per_m3(p_c_per_m2: Any, stress_pa: Any, material: str | LGDCoefficients,
                          temperature_k: float = 298.0) -> Any:
    """G(P, σ) = f_L(P) − ½σ:S:σ − σ:Q:PP in J m⁻³; σ as tensor components (..., 3, 3) (spec §2.1)."""
    m = get_material(material)
    p = _as_p(p_c_per_m2)
    xp = array_module(p, stress_pa)
    sig = xp.asarray(stress_pa, dtype=xp.float64)
    e0 = spontaneous_strain(p, m)
    s = xp.asarray(_s_tensor(m))
    elastic = 0.5 * xp.einsum("...ij,ijkl,...kl->...", sig, s, sig)
    return landau_energy_j_per_m3(p, m, temperature_k) - elastic - xp.einsum("...ij,...ij->...", sig, e0)


def helmholtz_energy_j_per_m3(p_c_per_m2: Any, strain: Any, material: str | LGDCoefficients,
                              temperature_k: float = 298.0) -> Any:
    """F(P, e) = f_L(P) + ½(e − e0(P)):C:(e − e0(P)) in J m⁻³; e tensor (..., 3, 3) (spec §2.1)."""
    m = get_material(material)
    p = _as_p(p_c_per_m2)
    xp = array_module(p, strain)
    d = xp.asarray(strain, dtype=xp.float64) - spontaneous_strain(p, m)
    c = xp.asarray(_c_tensor(m))
    return landau_energy_j_per_m3(p, m, temperature_k) + 0.5 * xp.einsum("...ij,ijkl,...kl->...", d, c, d)


def projected_strain(strain: Any, hkl: Sequence[float]) -> Any:
    """ε_g = ĝ·e·ĝ for a tensor strain (..., 3, 3) and reflection hkl."""
    xp = array_module(strain)
    g = xp.asarray(reflection_unit_vector(hkl))
    return xp.einsum("i,...ij,j->...", g, xp.asarray(strain), g)


# --------------------------------------------------------------------------- minimiser


@dataclass(frozen=True, kw_only=True)
class InversionOptions:
    """Options of the per-voxel minimisations (spec §2.2)."""

    temperature_k: float = 298.0
    """Temperature at which α1(T) is evaluated (the spec's known answers are at 298 K)."""
    n_iter: int = 40
    """Damped Newton iterations per seed (spec: ~10 needed; extra iterations are cheap)."""
    max_step_c_per_m2: float = 0.1
    """Largest |ΔP| of one Newton step."""
    strain_offset: float = 0.0
    """Added to every measured ε_g: the strain of the measurement's reference lattice relative to the
    cubic parent (DFXM strain is relative, spec §2.2 'Reference lattice')."""
    equivalence_tol_c_per_m2: float = 1e-6
    """Two solutions closer than this count as the same when counting equivalent solutions."""
    branch_tol_c_per_m2: float = 1e-3
    """Seed solutions whose canonical forms differ by more than this are distinct branches (branch gap)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature_k) and self.temperature_k > 0):
            raise ValueError(f"InversionOptions.temperature_k: expected > 0 K, found {self.temperature_k!r}")
        if self.n_iter < 1:
            raise ValueError(f"InversionOptions.n_iter: expected >= 1, found {self.n_iter!r}")
        if not self.max_step_c_per_m2 > 0:
            raise ValueError(f"InversionOptions.max_step_c_per_m2: expected > 0, found {self.max_step_c_per_m2!r}")
        if not math.isfinite(self.strain_offset):
            raise ValueError(f"InversionOptions.strain_offset: expected finite, found {self.strain_offset!r}")


def _newton(energy: Any, p0: Any, n_iter: int, max_step: float, tol: float = 1e-11) -> tuple[Any, Any]:
    """Saddle-free damped Newton on (..., 3) points; energy(p, order) -> (w, g, h). Returns (p, w).

    Steps use |eigenvalues| of the Hessian (descent even at saddles), are capped at max_step,
    and are halved until W does not increase; points whose step is below tol (C/m²) stop.
    """
    xp = array_module(p0)
    p = p0
    w, g, h = energy(p, 2)
    for _ in range(n_iter):
        lam, vec = xp.linalg.eigh(h)
        lam_abs = xp.abs(lam)
        lam_abs = xp.maximum(lam_abs, 1e-9 * xp.max(lam_abs, axis=-1, keepdims=True) + 1e-300)
        gv = xp.einsum("...ji,...j->...i", vec, g)
        d = -xp.einsum("...ij,...j->...i", vec, gv / lam_abs)
        norm = xp.sqrt(xp.sum(d * d, axis=-1, keepdims=True))
        d = d * xp.minimum(1.0, max_step / xp.maximum(norm, 1e-300))
        small = norm[..., 0] <= tol  # converged points keep p
        if bool(xp.all(small)):
            break
        accepted = small
        p_new, alpha = p, 1.0
        for _ in range(16):  # vectorised backtracking: first α = 2^-k that does not increase W
            trial = p + alpha * d
            ok = (~accepted) & (energy(trial, 0)[0] <= w + 1e-13 * xp.abs(w))  # roundoff-level rise allowed
            p_new = xp.where(ok[..., None], trial, p_new)
            accepted = accepted | ok
            if bool(xp.all(accepted)):
                break
            alpha *= 0.5
        p = p_new
        w, g, h = energy(p, 2)
    return p, w


def _seed_directions() -> np.ndarray:
    """Unit seeds along ⟨100⟩, ⟨110⟩, ⟨111⟩ with all sign patterns modulo the global sign."""
    dirs = []
    for v in itertools.product((-1, 0, 1), repeat=3):
        v = np.array(v, float)
        if np.any(v) and v[np.flatnonzero(v)[0]] > 0:
            dirs.append(v / np.linalg.norm(v))
    return np.array(dirs)  # 13 directions


def spontaneous_polarization_c_per_m2(material: str | LGDCoefficients, temperature_k: float = 298.0) -> float:
    """|P| of the stress-free tetragonal state along [001] (0 for a paraelectric), from df_L/dP² = 0."""
    m = get_material(material)
    coeff = {e: c for c, e in _monomials(m, temperature_k) if e[0] == 0 and e[1] == 0}
    # f(x) = Σ a_n x^n with x = P3²; roots of f'(x)
    a = [coeff.get((0, 0, 2 * n), 0.0) for n in range(1, 5)]
    poly = np.polynomial.Polynomial([n * a[n - 1] for n in range(1, 5)])
    best_x, best_f = 0.0, 0.0
    for r in poly.roots():
        if abs(r.imag) < 1e-12 and r.real > 0:
            x = r.real
            f = sum(a[n - 1] * x**n for n in range(1, 5))
            if f < best_f:
                best_x, best_f = x, f
    return math.sqrt(best_x)


def equilibrium_polarization(material: str | LGDCoefficients, stress_pa: Any, p_initial_c_per_m2: Any,
                             options: InversionOptions = InversionOptions()) -> Any:
    """Local minimiser P* of G(P, σ) from p_initial (spec §2.5 forward step); σ tensor (..., 3, 3)."""
    m = get_material(material)
    p0 = _as_p(p_initial_c_per_m2, "p_initial_c_per_m2")
    xp = array_module(p0, stress_pa)
    sig = xp.asarray(stress_pa, dtype=xp.float64)
    msig = xp.einsum("...ij,ijkl->...kl", sig, xp.asarray(_q_tensor(m)))  # σ:Q:PP = Pᵀ M_σ P
    msig = xp.broadcast_to(msig, p0.shape + (3,))
    monos = _monomials(m, options.temperature_k)

    def energy(p: Any, order: int) -> tuple[Any, Any, Any]:
        f, g, h = _landau(p, monos, order)
        mp = xp.einsum("...kl,...l->...k", msig, p)
        f = f - xp.sum(p * mp, axis=-1)
        if order >= 1:
            g = g - 2 * mp
        if order >= 2:
            h = h - 2 * msig
        return f, g, h

    return _newton(energy, p0, options.n_iter, options.max_step_c_per_m2)[0]


# --------------------------------------------------------------------------- inversions


@dataclass(frozen=True, kw_only=True)
class FullStrainInversion:
    """Result of :func:`invert_full_strain`; P and −P fit the strain equally (spec §2.3)."""

    polarization_c_per_m2: Any = field(repr=False)
    """One solution P (..., 3); its largest-|P_i| component is made non-negative."""
    alternative_c_per_m2: Any = field(repr=False)
    """The other solution, −P: strain never separates 180° domains."""
    negative_square: Any = field(repr=False)
    """Bool (..., 3): the closed-form P_i² was negative (noise or non-spontaneous strain) and was clipped to 0."""
    shear_residual: Any = field(repr=False)
    """Max |e_ij − e0_ij(P)| over the shear components (...,); large means signs or data are inconsistent."""


def invert_full_strain(strain: Any, material: str | LGDCoefficients) -> FullStrainInversion:
    """Closed-form P from the full strain tensor (..., 3, 3), up to global sign (spec §2.2).

    P_i² = [(Q11+Q12)e_ii − Q12(e_jj+e_kk)] / [(Q11−Q12)(Q11+2Q12)]; relative signs from
    sign(e_ij) = sign(P_iP_j) (Q44 > 0). The whole strain is taken as spontaneous (stress-free).
    """
    m = get_material(material)
    xp = array_module(strain)
    e = xp.asarray(strain, dtype=xp.float64)
    if e.ndim < 2 or e.shape[-2:] != (3, 3):
        raise ValueError(f"strain: expected tensor components of shape (..., 3, 3), found {tuple(e.shape)}")
    if not bool(xp.all(xp.isfinite(e))):
        raise ValueError(f"strain: {int(xp.sum(~xp.isfinite(e)))} non-finite (NaN/inf) entries; "
                         "mask invalid voxels before inverting")
    q11, q12 = m.q11_m4_per_c2, m.q12_m4_per_c2
    diag = xp.stack([e[..., 0, 0], e[..., 1, 1], e[..., 2, 2]], axis=-1)
    tr = xp.sum(diag, axis=-1, keepdims=True)
    p2 = ((q11 + q12) * diag - q12 * (tr - diag)) / ((q11 - q12) * (q11 + 2 * q12))
    neg = p2 < 0
    amp = xp.sqrt(xp.maximum(p2, 0.0))
    ref = xp.argmax(amp, axis=-1)  # reference component, taken positive
    e_ref = xp.take_along_axis(e, ref[..., None, None] * xp.ones(e.shape[:-2] + (1, 3), dtype=ref.dtype),
                               axis=-2)[..., 0, :]  # row e[ref, :]
    sign = xp.where(e_ref < 0, -1.0, 1.0)
    onehot = xp.arange(3) == ref[..., None]
    sign = xp.where(onehot, 1.0, sign)
    p = amp * sign
    e0 = spontaneous_strain(p, m)
    off = ~xp.eye(3, dtype=bool)
    shear_res = xp.max(xp.abs((e - e0)[..., off]), axis=-1)
    return FullStrainInversion(polarization_c_per_m2=p, alternative_c_per_m2=-p,
                               negative_square=neg, shear_residual=shear_res)


@dataclass(frozen=True, kw_only=True)
class ReflectionInversion:
    """Result of :func:`invert_reflections`: one representative P per voxel and its ambiguity (spec §2.3).

    Every image R·P with R in ``symmetry_ops`` has the same W (f_L is cubic-invariant and each
    R maps every measured ĝ to ±ĝ). This always includes −P (180° domains); for a (00l)
    reflection it also swaps and flips P1, P2 (x/y variants undetermined).
    """

    polarization_c_per_m2: Any = field(repr=False)
    """Representative P (..., 3): the image maximising (3, 2, 1)·R·P; NaN where masked."""
    n_equivalent: Any = field(repr=False)
    """Number of distinct symmetry-equivalent solutions per voxel (1 only for P = 0)."""
    symmetry_ops: np.ndarray = field(repr=False)
    """(n_ops, 3, 3) signed permutations R that leave every ±ĝ invariant."""
    stress_along_g_pa: Any = field(repr=False)
    """Inferred uniaxial stress λ_g = (A⁻¹r)_g in Pa, shape (..., n_reflections)."""
    energy_j_per_m3: Any = field(repr=False)
    """Minimised W(P) per voxel."""
    branch_gap_j_per_m3: Any = field(repr=False)
    """W of the best seed solution *not* symmetry-equivalent to P, minus W(P) (inf if none).
    A small gap means another polarization state fits ε_g almost as well (e.g. AFE ⟨110⟩ vs ⟨111⟩)."""
    mask: Any = field(repr=False)
    """Voxels that were inverted."""

    def equivalent_solutions(self) -> Any:
        """All images R·P, shape (..., n_ops, 3) (duplicates where P is on a symmetry element)."""
        xp = array_module(self.polarization_c_per_m2)
        ops = xp.asarray(self.symmetry_ops)
        return xp.einsum("rij,...j->...ri", ops, self.polarization_c_per_m2)


def _stabilizer(gs: np.ndarray) -> np.ndarray:
    """Signed permutation matrices R (m3̄m) with R ĝ = ±ĝ for every ĝ in gs."""
    ops = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            r = np.zeros((3, 3))
            for i in range(3):
                r[i, perm[i]] = signs[i]
            if all(min(np.linalg.norm(r @ g - g), np.linalg.norm(r @ g + g)) < 1e-9 for g in gs):
                ops.append(r)
    return np.array(ops)


def invert_reflections(eps: Any, hkls: Sequence[Sequence[float]], material: str | LGDCoefficients, *,
                       mask: Any = None, options: InversionOptions = InversionOptions()) -> ReflectionInversion:
    """Per-voxel P minimising W(P) = f_L + ½ rᵀA⁻¹r, r_g = ε_g − ĝ·e0(P)·ĝ (spec §2.2).

    One reflection gives W = f_L + (ε_g − ĝ·e0·ĝ)²/(2 s_gg): the unknown local stress is
    uniaxial along ĝ. Seeds at the ⟨100⟩/⟨110⟩/⟨111⟩ variants (stress-free |P| and the |P|
    that matches ε_g) and near P = 0; the lowest W is kept.

    Parameters
    ----------
    eps : array (..., n_reflections), dimensionless ε_g.
    hkls : reflections in the parent cubic frame, one per last-axis entry of ``eps``.
    mask : optional bool (...); voxels outside are skipped (NaN allowed there).
    """
    m = get_material(material)
    if hkls is None or len(hkls) == 0:
        raise ValueError("hkls: reflection metadata missing; pass at least one (h, k, l)")
    gs = np.array([reflection_unit_vector(h) for h in hkls])
    n_g = len(gs)
    xp = array_module(eps, mask)
    eps = xp.asarray(eps, dtype=xp.float64)
    if eps.ndim == 0 or eps.shape[-1] != n_g:
        raise ValueError(f"eps: shape {tuple(eps.shape)}, expected (..., {n_g}) with one last-axis entry "
                         f"per reflection in hkls")
    vox_shape = eps.shape[:-1]
    mask = xp.ones(vox_shape, dtype=bool) if mask is None else xp.asarray(mask, dtype=bool)
    if mask.shape != vox_shape:
        raise ValueError(f"mask: shape {tuple(mask.shape)}, expected {tuple(vox_shape)} to match eps")
    bad = mask & ~xp.all(xp.isfinite(eps), axis=-1)
    if bool(xp.any(bad)):
        first = tuple(int(i) for i in np.argwhere(np.asarray(_to_np(bad)))[0])
        raise ValueError(f"eps: {int(xp.sum(bad))} NaN/inf strain values inside the mask (first at voxel "
                         f"{first}); set mask=False there (StrainMaps.mask) or fill them")
    e_meas = eps[mask] + options.strain_offset  # (N, n_g)

    q = _q_tensor(m)
    mg = xp.asarray(np.einsum("gi,gj,ijkl->gkl", gs, gs, q))  # ĝ·e0·ĝ = Pᵀ M_g P
    a = np.einsum("gi,gj,ijkl,hk,hl->gh", gs, gs, _s_tensor(m), gs, gs)
    ainv = xp.asarray(np.linalg.inv(a))
    monos = _monomials(m, options.temperature_k)

    def energy(p: Any, order: int) -> tuple[Any, Any, Any]:
        f, g, h = _landau(p, monos, order)
        mp = xp.einsum("gkl,...l->...gk", mg, p)  # (..., n_g, 3)
        r = e_meas - xp.sum(mp * p[..., None, :], axis=-1)  # (..., n_g)
        lam = xp.einsum("gh,...h->...g", ainv, r)
        f = f + 0.5 * xp.sum(r * lam, axis=-1)
        if order >= 1:
            g = g - 2 * xp.einsum("...g,...gk->...k", lam, mp)
        if order >= 2:
            h = (h + 4 * xp.einsum("gh,...gk,...hl->...kl", ainv, mp, mp)
                 - 2 * xp.einsum("...g,gkl->...kl", lam, mg))
        return f, g, h

    # seeds: directions (one per orbit of the stabilizer) × {stress-free |P|, strain-matched |P|}, + near-zero
    ops = _stabilizer(gs)
    dirs: list[np.ndarray] = []
    for d in _seed_directions():
        if not any(np.allclose(r @ d, s * k) for r in ops for k in dirs for s in (1.0, -1.0)):
            dirs.append(d)
    p_s = spontaneous_polarization_c_per_m2(m, options.temperature_k)
    p_s = p_s if p_s > 0 else 0.1
    n_vox = e_meas.shape[0]
    seeds = [xp.broadcast_to(xp.asarray(p_s * d), (n_vox, 3)) for d in dirs]
    for d in dirs:  # |P|² with Σ_g ĝ·e0(|P|d)·ĝ = Σ_g ε_g where that is positive
        proj = float(sum(d @ np.asarray(mgi) @ d for mgi in np.einsum("gi,gj,ijkl->gkl", gs, gs, q)))
        x = xp.sum(e_meas, axis=-1) / proj if abs(proj) > 1e-12 else xp.zeros(n_vox)
        amp = xp.sqrt(xp.clip(x, 0.0, 4.0))
        seeds.append(amp[:, None] * xp.asarray(d)[None, :] + 1e-4)
    seeds.append(xp.broadcast_to(xp.asarray([1e-3, 2e-3, 3e-3]), (n_vox, 3)))
    p0 = xp.stack(seeds, axis=0).astype(xp.float64)  # (n_seed, N, 3)
    p_all, w_all = _newton(energy, p0, options.n_iter, options.max_step_c_per_m2)
    # ambiguity: orbit of P under the stabilizer of the reflections; canonical representative
    ops_x = xp.asarray(ops)
    imgs_all = xp.einsum("rij,snj->snri", ops_x, p_all)
    pick = xp.argmax(imgs_all @ xp.asarray([3.0, 2.0, 1.0]), axis=-1)
    rep_all = xp.take_along_axis(imgs_all, pick[..., None, None] * xp.ones((1, 1, 1, 3), dtype=pick.dtype),
                                 axis=-2)[..., 0, :]  # (n_seed, N, 3)
    best = xp.argmin(w_all, axis=0)
    p_rep = xp.take_along_axis(rep_all, best[None, :, None] * xp.ones((1, 1, 3), dtype=best.dtype), axis=0)[0]
    w_best = xp.min(w_all, axis=0)
    # next-best seed solution that is not symmetry-equivalent to the best one
    other = xp.sqrt(xp.sum((rep_all - p_rep[None]) ** 2, axis=-1)) > options.branch_tol_c_per_m2
    gap = xp.min(xp.where(other, w_all, xp.inf), axis=0) - w_best
    imgs = xp.einsum("rij,nj->nri", ops_x, p_rep)
    n_fix = xp.sum(xp.sqrt(xp.sum((imgs - p_rep[:, None, :]) ** 2, axis=-1))
                   < options.equivalence_tol_c_per_m2, axis=1)
    n_eq = len(ops) // n_fix
    r = e_meas - xp.einsum("nk,gkl,nl->ng", p_rep, mg, p_rep)
    lam = xp.einsum("gh,nh->ng", ainv, r)

    def scatter(vals: Any, fill: float, dtype: Any = xp.float64) -> Any:
        out = xp.full(vox_shape + vals.shape[1:], fill, dtype=dtype)
        out[mask] = vals
        return out

    return ReflectionInversion(
        polarization_c_per_m2=scatter(p_rep, math.nan), n_equivalent=scatter(n_eq, 0, int),
        symmetry_ops=ops, stress_along_g_pa=scatter(lam, math.nan), branch_gap_j_per_m3=scatter(gap, math.nan),
        energy_j_per_m3=scatter(w_best, math.nan), mask=mask)


def _to_np(a: Any) -> np.ndarray:
    return a.get() if type(a).__module__.split(".")[0] == "cupy" else np.asarray(a)


def polarization_from_strain_maps(strain_maps: Any, *, hkl: Sequence[float] | None,
                                  material: str | LGDCoefficients | None,
                                  options: InversionOptions = InversionOptions()) -> ReflectionInversion:
    """Polarization maps from one reflection's ε_g map (spec §2.2 'One reflection', §2.3).

    ``strain_maps`` is a :class:`analysis.strain.StrainMaps` (its ``eps_zz`` and ``mask`` are
    used; ε_zz there is the strain along the scattering vector) or a bare array of ε_g, in
    which case every voxel must be finite. ``hkl`` is that reflection in the parent cubic frame.
    Returns P up to the ambiguities listed in :class:`ReflectionInversion`.
    """
    if material is None:
        raise ValueError(f"material: missing; pass one of {sorted(MATERIALS)} or an LGDCoefficients")
    get_material(material)
    g = reflection_unit_vector(hkl)
    if hasattr(strain_maps, "eps_zz"):
        eps, mask = strain_maps.eps_zz, getattr(strain_maps, "mask", None)
    else:
        eps, mask = strain_maps, None
    if eps is None:
        raise ValueError("strain_maps: no ε map found (eps_zz is None)")
    xp = array_module(eps)
    return invert_reflections(xp.asarray(eps)[..., None], [tuple(g)], material, mask=mask, options=options)
