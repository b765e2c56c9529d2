"""Illumination-weighted smoothness prior for the ML refinement: a Gaussian prior on ∇ρ, scaled by |P|².

The seed's ML cost (Eq 4) has only the data term and the thickness-support penalty μ. On data
that the engine's forward model does not describe exactly (every measurement, and the simulator,
whose discretisation is finer than the engine's), hundreds of CG iterations fit that mismatch with
voxel-scale structure in ρ (docs/seed-schedule.md: E_ρ 0.25 → 1.00 in 500 ML iterations while the
cost keeps falling). A quadratic prior on the finite differences of ρ, the "del2" Gaussian
regulariser of ptypy's ML engine (Thibault & Guizar-Sicairos, New J. Phys. 14, 063004 (2012),
doi:10.1088/1367-2630/14/6/063004), penalises that structure. Here it is weighted by the current
illumination, so that it has the weight of the data term's curvature at every voxel, is 0 where
no probe reaches, and is unchanged by ρ → ρ/c, P → cP (which changes no Ψ_j; a prior on ρ alone
is lowered along that direction at no data cost, and CG then shrinks ρ and grows P without end):

    R(ρ, P2) = s Σ_n w(n) r(n),   w = Σ_j |P_j|² on the object grid,   r = Σ_a |ρ(n + e_a) − ρ(n)|²,

a = e1, e2, e3 (periodic differences), P_j = B Shift_{g_j} P2 (docs/geometry.md, Operators), s dimensionless.
Wirtinger gradients: ∂R/∂ρ* = s Σ_a D_aᴴ(w D_a ρ) with D_a = (shift by −1 along a) − I and
D_aᴴ = (shift by +1) − I; ∂R/∂P2* = s Σ_j Shift_{−g_j} Bᴴ(r_j P_j), r_j = r on view j. Along
(Δρ, ΔP2), w(t) = w0 + w1 t + w2 t² (w1 = Σ_j 2Re P_j*ΔP_j, w2 = Σ_j |ΔP_j|²) and
r(t) = r0 + r1 t + r2 t² (r1 = Σ_a 2Re (D_aρ)* D_aΔρ, r2 = Σ_a |D_aΔρ|²), so R(t) is the quartic
s Σ_n c_n tⁿ with c_n = Σ_{i+k=n} Σ w_i r_k: the exact line search of Thibault & Guizar-Sicairos 2012 takes R'(0) = s
c1 and
R''(0) = 2s c2, and the Armijo trials evaluate R(t) from the five numbers, without a pass.

The ML passes that build P_j for the data term anyway also accumulate w0 (gradient pass) and
w1, w2 (line pass) and add s r_j P_j to the box they project for ∂L/∂P2* (:class:`PriorSums`,
filled by :func:`analysis.bragg.solvers.ml.cost_and_gradient` / :func:`~analysis.bragg.solvers.ml.line_coefficients`
on the array path and by :class:`analysis.bragg.solvers.fused_cpu.FusedCpuML` with Numba kernels): the
prior builds no P_j of its own. What remains are the differences of ρ and Δρ on the object grid: on
NumPy 3D arrays voxel-by-voxel Numba kernels (:func:`analysis.bragg.solvers.cpu_kernels.roughness`, ``prior_gradient``,
``prior_line_sums``, float64 sums), elsewhere (CuPy) whole-array differences with the same numbers.

Weakly lit voxels get almost no prior (and almost no data): long ML runs let |ρ| grow there
(measured 2.6 at voxels lit at 10⁻⁴ of the maximum, against 0.65 in the lit crystal), so masks of
the result should be restricted to the illuminated region (:meth:`analysis.bragg.engine.Reconstruction.illumination`).
A floor on w that smooths them too was measured to make the lit crystal worse (E_ρ 0.18 → 0.29 /
0.37 for a floor of 0.1 / 1 × mean w, docs/seed-schedule.md): those voxels absorb model error that
would otherwise land in the lit crystal.

The illumination maps are sums over this rank's positions and must be all-reduced by the caller
before they enter the cost, the ρ-gradient and the line polynomial (the probe gradient is a
per-position sum like the data term's and reduces with it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from analysis.bragg.solvers.model import BraggData, BraggModel
from analysis.xp import Array, array_module, cpu_kernels, to_numpy

__all__ = ["PriorSums", "illumination_maps", "roughness_maps", "prior_cost_and_gradient",
           "prior_line_polynomial", "polynomial_value"]


@dataclass(kw_only=True)
class PriorSums:
    """What one ML data pass accumulates for the prior while it builds P_j (this rank's positions).

    Give it to :func:`analysis.bragg.solvers.ml.cost_and_gradient` (fills ``maps`` = [w0] and, with
    ``roughness``, adds s Σ_j Shift_{−g_j} Bᴴ(r0_j P_j) to the probe gradient) or to
    :func:`analysis.bragg.solvers.ml.line_coefficients` (fills ``maps`` = [w1, w2] along ΔP2).
    """

    strength: float
    """s of R."""
    roughness: Array | None = None
    """r0 = Σ_a|D_aρ|² on the object grid (real, the probe's precision): needed for ∂R/∂P2*; None: not wanted."""
    maps: list[Array] = field(default_factory=list)
    """The accumulated maps, on the object grid."""

    def start(self, like: Array, count: int) -> list[Array]:
        """``count`` zero maps shaped as the object ``like``, in its real precision (float32 for complex64)."""
        xp = array_module(like)
        self.maps = [xp.zeros(like.shape, dtype=np.float32 if like.dtype == np.complex64 else np.float64)
                     for _ in range(count)]
        return self.maps


def illumination_maps(probe: Array, data: BraggData, op: BraggModel, object_shape: tuple[int, ...],
                      direction: Array | None = None) -> tuple[Array, ...]:
    """(w0,) = (Σ_j |P_j|²,) on the object grid, or with ``direction`` ΔP2 also w1 = Σ_j 2Re P_j*ΔP_j and
    w2 = Σ_j |ΔP_j|² (positions with data only; this rank's share). Builds every P_j: for reports and
    tests; the ML step gets the same maps from its data passes (:class:`PriorSums`).
    """
    xp = array_module(probe)
    dtype = probe.real.dtype
    maps = [xp.zeros(object_shape, dtype=dtype) for _ in range(1 if direction is None else 3)]
    for j in range(data.n_positions):
        if not data.has_data(j):
            continue
        sl = op.view(data.offsets_vox[j])
        pj = op.probe_at(probe, data.shifts_px[j])
        maps[0][sl] += pj.real ** 2 + pj.imag ** 2
        if direction is not None:
            dpj = op.probe_at(direction, data.shifts_px[j])
            maps[1][sl] += 2.0 * (xp.conj(pj) * dpj).real
            maps[2][sl] += dpj.real ** 2 + dpj.imag ** 2
    return tuple(maps)


def _kernels(rho: Array) -> ModuleType | None:
    """The Numba kernels of :mod:`analysis.bragg.solvers.cpu_kernels` for a 3D NumPy ρ, else None (the array code
    runs).
    """
    if isinstance(rho, np.ndarray) and rho.ndim == 3 and rho.dtype in (np.complex64, np.complex128):
        return cpu_kernels()
    return None


def _difference(rho: Array, axis: int) -> Array:
    """D_a ρ = ρ(n + e_a) − ρ(n) along ``axis`` (periodic)."""
    xp = array_module(rho)
    return xp.roll(rho, -1, axis=axis) - rho


def roughness_maps(rho: Array, direction: Array | None = None) -> tuple[Array, ...]:
    """(r0,) = (Σ_a |D_a ρ|²,), or with ``direction`` Δρ also r1 = Σ_a 2Re (D_aρ)* D_aΔρ and r2 = Σ_a |D_aΔρ|²."""
    xp = array_module(rho)
    k = _kernels(rho)
    if direction is None and k is not None:
        r0 = np.empty(rho.shape, dtype=rho.real.dtype)
        k.roughness(rho, r0)
        return (r0,)
    out = [xp.zeros(rho.shape, dtype=rho.real.dtype) for _ in range(1 if direction is None else 3)]
    for a in range(rho.ndim):
        d = _difference(rho, a)
        out[0] += d.real ** 2 + d.imag ** 2
        if direction is not None:
            dd = _difference(direction, a)
            out[1] += 2.0 * (d.real * dd.real + d.imag * dd.imag)
            out[2] += dd.real ** 2 + dd.imag ** 2
    return tuple(out)


def prior_cost_and_gradient(rho: Array, w0: Array, strength: float) -> tuple[float, Array]:
    """(R, ∂R/∂ρ* = s Σ_a D_aᴴ(w0 D_a ρ)) in one pass over the axes; the gradient has ρ's shape and dtype."""
    xp = array_module(rho)
    g = xp.zeros_like(rho)
    if strength == 0:
        return 0.0, g
    k = _kernels(rho)
    if k is not None:
        return strength * float(k.prior_gradient(rho, w0, strength, g)), g
    total = 0.0                                            # a 0-d device sum: read once, below
    for a in range(rho.ndim):
        wd = _difference(rho, a)
        total += xp.sum(w0 * (wd.real ** 2 + wd.imag ** 2), dtype=xp.float64)
        wd *= w0
        g += xp.roll(wd, 1, axis=a)
        g -= wd
    g *= rho.real.dtype.type(strength)
    return strength * float(total), g


def prior_line_polynomial(rho: Array, d_rho: Array, w_maps: tuple[Array, ...], strength: float) -> np.ndarray:
    """(a0 … a4) of R(ρ + tΔρ, P2 + tΔP2) = Σ_n a_n tⁿ from the all-reduced (w0,) or (w0, w1, w2).

    A CG direction can be 10¹⁰ × ρ, and products of its maps overflow float32: the sums are taken along
    the direction scaled to ‖Δρ‖ = ‖ρ‖ (Δρ/λ, w1/λ, w2/λ², float32 maps, float64 sums) and a_n = λⁿ ã_n.
    """
    a = np.zeros(5)
    if strength == 0:
        return a
    kernels = _kernels(rho)
    if kernels is not None:                  # float64 sums voxel by voxel: no overflow, no scaling needed
        with_probe = len(w_maps) == 3
        w1, w2 = (w_maps[1], w_maps[2]) if with_probe else (w_maps[0], w_maps[0])
        sums = kernels.prior_line_sums(rho, d_rho, w_maps[0], w1, w2, with_probe)[:len(w_maps)]
    else:
        xp = array_module(rho)
        norm_rho, norm_dir = float(xp.linalg.norm(rho)), float(xp.linalg.norm(d_rho))
        lam = norm_dir / norm_rho if norm_rho > 0 and norm_dir > 0 else 1.0
        r = roughness_maps(rho, d_rho * rho.real.dtype.type(1.0 / lam))
        raw = xp.stack([xp.sum(w * w.dtype.type(lam ** -i) * rk, dtype=xp.float64)
                        for i, w in enumerate(w_maps) for rk in r])          # one copy to the host
        n_w, n_r = len(w_maps), len(r)
        sums = to_numpy(raw).reshape(n_w, n_r) * lam ** (np.arange(n_w)[:, None] + np.arange(n_r)[None, :])
    for (i, k), v in np.ndenumerate(sums):   # S_ik = Σ w_i r_k multiplies t^(i+k)
        a[i + k] += v
    return strength * a


def polynomial_value(coefficients: np.ndarray, t: float) -> float:
    """Σ_n a_n tⁿ."""
    return float(np.polynomial.polynomial.polyval(t, coefficients))
