"""Polarization from strain: closed-form full-strain inversion and per-voxel reflection inversions.

Implements the inversions and ambiguities of ``docs/polarization.md`` (Equations, Ambiguities) for a cubic
m3̄m parent with stress-free spontaneous strain:

* :func:`invert_full_strain` — closed-form P from all six strain components, P up
  to a global sign that is returned explicitly;
* :func:`invert_reflections` — per-voxel, vectorised minimisation of
  W(P) = f_L + ½ rᵀA⁻¹r (one or several reflections, unknown local stress);
* :func:`polarization_from_strain_maps` — the one-reflection case on an ε_g map such as
  :attr:`analysis.strain.StrainMaps.eps_zz`.

The coefficients are in :mod:`analysis.ferro.materials`, the forward maps in
:mod:`analysis.ferro.energy`, the minimiser in :mod:`analysis.ferro.minimise`.

Conventions (see ``docs/polarization.md``): strains and stresses are 3×3 *tensor*
components (ε_23, not γ_4 = 2ε_23). Q44 is the Voigt/Haun engineering coefficient,
γ4 = 2e23 = Q44 P2 P3, i.e. Q44 = 4 Q_2323; s44 = 4 S_2323; C44 = C_2323. SI units:
P in C m⁻², energies in J m⁻³, stress in Pa.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.ferro.energy import _landau, _monomials, spontaneous_strain
from analysis.ferro.materials import MATERIALS, LGDCoefficients, get_material
from analysis.ferro.minimise import InversionOptions, _newton, _seed_directions, spontaneous_polarization_c_per_m2
from analysis.ferro.tensors import _q_tensor, _s_tensor, reflection_unit_vector
from analysis.xp import Array, array_module

__all__ = ["FullStrainInversion", "ReflectionInversion", "invert_full_strain", "invert_reflections",
           "polarization_from_strain_maps"]

_DEFAULT_OPTIONS = InversionOptions()
"""Defaults of the inversions (frozen, so one shared instance)."""


@dataclass(frozen=True, kw_only=True)
class FullStrainInversion:
    """Result of :func:`invert_full_strain`; P and −P fit the strain equally (docs/polarization.md, Ambiguities)."""

    polarization_c_per_m2: Array = field(repr=False)
    """One solution P (..., 3); its largest-|P_i| component is made non-negative."""
    alternative_c_per_m2: Array = field(repr=False)
    """The other solution, −P: strain never separates 180° domains."""
    negative_square: Array = field(repr=False)
    """Bool (..., 3): the closed-form P_i² was negative (noise or non-spontaneous strain) and was clipped to 0."""
    shear_residual: Array = field(repr=False)
    """Max |e_ij − e0_ij(P)| over the shear components (...,); large means signs or data are inconsistent."""


def invert_full_strain(strain: Array, material: str | LGDCoefficients) -> FullStrainInversion:
    """Closed-form P from the full strain tensor (..., 3, 3), up to global sign (docs/polarization.md, Equations).

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
    """Result of :func:`invert_reflections`: one representative P per voxel and its ambiguity
    (docs/polarization.md, Ambiguities).

    Every image R·P with R in ``symmetry_ops`` has the same W (f_L is cubic-invariant and each
    R maps every measured ĝ to ±ĝ). This always includes −P (180° domains); for a (00l)
    reflection it also swaps and flips P1, P2 (x/y variants undetermined).
    """

    polarization_c_per_m2: Array = field(repr=False)
    """Representative P (..., 3): the image maximising (3, 2, 1)·R·P; NaN where masked."""
    n_equivalent: Array = field(repr=False)
    """Number of distinct symmetry-equivalent solutions per voxel (1 only for P = 0)."""
    symmetry_ops: np.ndarray = field(repr=False)
    """(n_ops, 3, 3) signed permutations R that leave every ±ĝ invariant."""
    stress_along_g_pa: Array = field(repr=False)
    """Inferred uniaxial stress λ_g = (A⁻¹r)_g in Pa, shape (..., n_reflections)."""
    energy_j_per_m3: Array = field(repr=False)
    """Minimised W(P) per voxel."""
    branch_gap_j_per_m3: Array = field(repr=False)
    """W of the best seed solution *not* symmetry-equivalent to P, minus W(P) (inf if none).
    A small gap means another polarization state fits ε_g almost as well (e.g. AFE ⟨110⟩ vs ⟨111⟩)."""
    mask: Array = field(repr=False)
    """Voxels that were inverted."""

    def equivalent_solutions(self) -> Array:
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


def invert_reflections(eps: Array, hkls: Sequence[Sequence[float]], material: str | LGDCoefficients, *,
                       mask: Array | None = None, options: InversionOptions = _DEFAULT_OPTIONS) -> ReflectionInversion:
    """Per-voxel P minimising W(P) = f_L + ½ rᵀA⁻¹r, r_g = ε_g − ĝ·e0(P)·ĝ (docs/polarization.md, Equations).

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

    def energy(p: Array, order: int) -> tuple[Array, Any, Any]:
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

    def scatter(vals: Array, fill: float, dtype: Any = xp.float64) -> Array:
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
                                  options: InversionOptions = _DEFAULT_OPTIONS) -> ReflectionInversion:
    """Polarization maps from one reflection's ε_g map (docs/polarization.md, Equations and Ambiguities).

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
