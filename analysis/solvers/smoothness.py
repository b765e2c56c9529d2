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

a = e1, e2, e3 (periodic differences), P_j = B Shift_{g_j} P2 (spec 1.5–1.6), s dimensionless.
Wirtinger gradients: ∂R/∂ρ* = s Σ_a D_aᴴ(w D_a ρ) with D_a = (shift by −1 along a) − I and
D_aᴴ = (shift by +1) − I; ∂R/∂P2* = s Σ_j Shift_{−g_j} Bᴴ(r_j P_j), r_j = r on view j. Along
(Δρ, ΔP2), w(t) = w0 + w1 t + w2 t² (w1 = Σ_j 2Re P_j*ΔP_j, w2 = Σ_j |ΔP_j|²) and
r(t) = r0 + r1 t + r2 t² (r1 = Σ_a 2Re (D_aρ)* D_aΔρ, r2 = Σ_a |D_aΔρ|²), so the exact line search of
spec §3 takes R'(0) = s Σ (w1 r0 + w0 r1) and R''(0) = 2s Σ (w2 r0 + w1 r1 + w0 r2).

Weakly lit voxels get almost no prior (and almost no data): long ML runs let |ρ| grow there
(measured 2.6 at voxels lit at 10⁻⁴ of the maximum, against 0.65 in the lit crystal), so masks of
the result should be restricted to the illuminated region (:meth:`analysis.engine.Reconstruction.illumination`).
A floor on w that smooths them too was measured to make the lit crystal worse (E_ρ 0.18 → 0.29 /
0.37 for a floor of 0.1 / 1 × mean w, docs/seed-schedule.md): those voxels absorb model error that
would otherwise land in the lit crystal.

Every function takes this rank's positions; the illumination maps are sums over positions and
must be all-reduced by the caller before they enter the cost, the ρ-gradient and the line
coefficients (the probe gradient is a per-position sum like the data term's and reduces with it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.solvers.model import BraggData, BraggModel
from analysis.xp import array_module

__all__ = ["ProbeOps", "illumination_maps", "roughness_maps", "prior_cost", "prior_object_gradient",
           "prior_probe_gradient", "prior_line_coefficients"]


@dataclass(frozen=True)
class ProbeOps:
    """How P_j = B Shift_g P2 and Shift_{−g} Bᴴ are computed: the array code (:meth:`array`) or the
    fused CPU probe boxes of the ML solver, whose buffers ``extrude`` returns and ``project`` consumes."""

    extrude: Callable[[Any, np.ndarray], Any]
    """(P2, shift) → P_j on the box (may be a reused buffer: use it before the next call)."""
    extrude_direction: Callable[[Any, np.ndarray], Any]
    """(ΔP2, shift) → ΔP_j, into a buffer other than ``extrude``'s."""
    project: Callable[[Any, np.ndarray], Any]
    """(box values, shift) → Shift_{−g} Bᴴ(box), (N2, N3); the values are ``extrude``'s buffer, changed in place."""

    @classmethod
    def array(cls, op: BraggModel) -> "ProbeOps":
        """The array code of ``op`` (any backend)."""
        return cls(extrude=op.probe_at, extrude_direction=op.probe_at, project=op.probe_adjoint)


def illumination_maps(probe: Any, data: BraggData, op: BraggModel, object_shape: tuple[int, ...],
                      direction: Any = None, probe_ops: ProbeOps | None = None) -> tuple[Any, ...]:
    """(w0,) = (Σ_j |P_j|²,) on the object grid, or with ``direction`` ΔP2 also w1 = Σ_j 2Re P_j*ΔP_j and
    w2 = Σ_j |ΔP_j|² (positions with data only; this rank's share)."""
    xp = array_module(probe)
    ops = ProbeOps.array(op) if probe_ops is None else probe_ops
    dtype = probe.real.dtype
    maps = [xp.zeros(object_shape, dtype=dtype) for _ in range(1 if direction is None else 3)]
    for j in range(data.n_positions):
        if not data.has_data(j):
            continue
        sl = op.view(data.offsets_vox[j])
        pj = ops.extrude(probe, data.shifts_px[j])
        maps[0][sl] += pj.real ** 2 + pj.imag ** 2
        if direction is not None:
            dpj = ops.extrude_direction(direction, data.shifts_px[j])
            maps[1][sl] += 2.0 * (xp.conj(pj) * dpj).real
            maps[2][sl] += dpj.real ** 2 + dpj.imag ** 2
    return tuple(maps)


def _differences(rho: Any) -> list[Any]:
    """D_a ρ = ρ(n + e_a) − ρ(n) for every axis a (periodic)."""
    xp = array_module(rho)
    return [xp.roll(rho, -1, axis=a) - rho for a in range(rho.ndim)]


def roughness_maps(rho: Any, direction: Any = None) -> tuple[Any, ...]:
    """(r0,) = (Σ_a |D_a ρ|²,), or with ``direction`` Δρ also r1 = Σ_a 2Re (D_aρ)* D_aΔρ and r2 = Σ_a |D_aΔρ|²."""
    xp = array_module(rho)
    d_rho = _differences(rho)
    r0 = sum(d.real ** 2 + d.imag ** 2 for d in d_rho)
    if direction is None:
        return (r0,)
    d_dir = _differences(direction)
    r1 = sum(2.0 * (xp.conj(a) * b).real for a, b in zip(d_rho, d_dir))
    r2 = sum(d.real ** 2 + d.imag ** 2 for d in d_dir)
    return r0, r1, r2


def prior_cost(rho: Any, w0: Any, strength: float) -> float:
    """R = s Σ w0 r0 (float64 sum), with the all-reduced illumination ``w0``."""
    if strength == 0:
        return 0.0
    xp = array_module(rho)
    return strength * float(xp.sum(w0 * roughness_maps(rho)[0], dtype=xp.float64))


def prior_object_gradient(rho: Any, w0: Any, strength: float) -> Any:
    """∂R/∂ρ* = s Σ_a D_aᴴ(w0 D_a ρ), same shape and dtype as ρ."""
    xp = array_module(rho)
    g = xp.zeros_like(rho)
    if strength == 0:
        return g
    for a, d in enumerate(_differences(rho)):
        wd = w0 * d
        g += xp.roll(wd, 1, axis=a) - wd
    return g * rho.real.dtype.type(strength)


def prior_probe_gradient(rho: Any, probe: Any, data: BraggData, op: BraggModel, strength: float,
                         probe_ops: ProbeOps | None = None) -> Any:
    """∂R/∂P2* = s Σ_j Shift_{−g_j} Bᴴ(r0_j P_j) over this rank's positions (reduce like the data term's)."""
    xp = array_module(probe)
    ops = ProbeOps.array(op) if probe_ops is None else probe_ops
    g = xp.zeros_like(probe)
    if strength == 0:
        return g
    r0 = roughness_maps(rho)[0].astype(probe.real.dtype, copy=False)
    for j in range(data.n_positions):
        if data.has_data(j):
            pj = ops.extrude(probe, data.shifts_px[j])
            pj *= r0[op.view(data.offsets_vox[j])]
            g += ops.project(pj, data.shifts_px[j])
    return g * probe.real.dtype.type(strength)


def prior_line_coefficients(rho: Any, d_rho: Any, w_maps: tuple[Any, ...], strength: float) -> tuple[float, float]:
    """(R'(0), R''(0)) along (Δρ, ΔP2) from the all-reduced (w0, w1, w2) (w1 = w2 = 0 if P2 is fixed)."""
    if strength == 0:
        return 0.0, 0.0
    xp = array_module(rho)
    r0, r1, r2 = roughness_maps(rho, d_rho)
    w0 = w_maps[0]

    def total(a: Any) -> float:
        return float(xp.sum(a, dtype=xp.float64))

    d1 = total(w0 * r1)
    d2 = total(w0 * r2)
    if len(w_maps) == 3:
        w1, w2 = w_maps[1], w_maps[2]
        d1 += total(w1 * r0)
        d2 += total(w2 * r0) + total(w1 * r1)
    return strength * d1, 2.0 * strength * d2
