"""Per-voxel minimisation of LGD energies: options, saddle-free damped Newton, seeds (docs/polarization.md, Equations).

Also the two stress-free / stressed equilibria built on it: the spontaneous |P| and the local
minimiser P* of G(P, σ) (the forward step of the simulated ferroelectric chain).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.ferro.energy import _as_p, _landau, _monomials
from analysis.ferro.materials import LGDCoefficients, get_material
from analysis.ferro.tensors import _q_tensor
from analysis.xp import Array, array_module

__all__ = ["InversionOptions", "spontaneous_polarization_c_per_m2", "equilibrium_polarization"]


@dataclass(frozen=True, kw_only=True)
class InversionOptions:
    """Options of the per-voxel minimisations (docs/polarization.md, Equations)."""

    temperature_k: float = 298.0
    """Temperature at which α1(T) is evaluated (the known answers of docs/polarization.md are at 298 K)."""
    n_iter: int = 40
    """Damped Newton iterations per seed (about 10 are needed; extra iterations are cheap)."""
    max_step_c_per_m2: float = 0.1
    """Largest |ΔP| of one Newton step."""
    strain_offset: float = 0.0
    """Added to every measured ε_g: the strain of the measurement's reference lattice relative to the
    cubic parent (DFXM strain is relative, docs/polarization.md, Conventions)."""
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


def _newton(energy: Any, p0: Array, n_iter: int, max_step: float, tol: float = 1e-11) -> tuple[Array, Array]:
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
    for signs in itertools.product((-1, 0, 1), repeat=3):
        v = np.array(signs, float)
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
    for r in np.asarray(poly.roots(), complex):
        if abs(r.imag) < 1e-12 and r.real > 0:
            x = r.real
            f = sum(a[n - 1] * x**n for n in range(1, 5))
            if f < best_f:
                best_x, best_f = x, f
    return math.sqrt(best_x)


def equilibrium_polarization(material: str | LGDCoefficients, stress_pa: Array, p_initial_c_per_m2: Array,
                             options: InversionOptions = InversionOptions()) -> Array:
    """Local minimiser P* of G(P, σ) from p_initial (docs/polarization.md, Equations); σ tensor (..., 3, 3)."""
    m = get_material(material)
    p0 = _as_p(p_initial_c_per_m2, "p_initial_c_per_m2")
    xp = array_module(p0, stress_pa)
    sig = xp.asarray(stress_pa, dtype=xp.float64)
    msig = xp.einsum("...ij,ijkl->...kl", sig, xp.asarray(_q_tensor(m)))  # σ:Q:PP = Pᵀ M_σ P
    msig = xp.broadcast_to(msig, p0.shape + (3,))
    monos = _monomials(m, options.temperature_k)

    def energy(p: Array, order: int) -> tuple[Array, Any, Any]:
        f, g, h = _landau(p, monos, order)
        mp = xp.einsum("...kl,...l->...k", msig, p)
        f = f - xp.sum(p * mp, axis=-1)
        if order >= 1:
            g = g - 2 * mp
        if order >= 2:
            h = h - 2 * msig
        return f, g, h

    return _newton(energy, p0, options.n_iter, options.max_step_c_per_m2)[0]
