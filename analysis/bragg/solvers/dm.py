"""Difference map / RAAR on the exit waves of 3D Bragg ptychography, probe fixed (issue 14).

The per-position update of :mod:`analysis.bragg.solvers.epie` is a local method: from the flat start (ρ = 1 on the
slab) it settles in a state that fits noise-free, exactly modelled data only to R ≈ 0.02 and sits far from the
truth (docs/benchmarks.md, "Difference map before ePIE": on ptypy's case E 0.545 → 0.355 at U = 1 with
60 DM sweeps first). Projection algorithms on the exit waves
ψ_j = P_j ρ_j leave such states: the difference map of Thibault et al. (Science 321, 379 (2008),
doi:10.1126/science.1158573) and Luke's relaxed averaged alternating reflections (RAAR, Inverse Problems 21, 37
(2005), doi:10.1088/0266-5611/21/1/004), here with

* the overlap projection Π_O: ρ = S · Σ_j P_j* ψ_j / Σ_j |P_j|² (the hard support S; voxels no probe reaches keep
  their value), then ψ_j = P_j ρ_j;
* the Fourier projection Π_F: ψ_j + Fᴴ(Π(Fψ_j) − Fψ_j) with the modulus constraint of seed Eq 13 (ω = 0 left free,
  the background b held), exact because F Fᴴ = 1 on the measured planes.

β = 1 is the difference map ψ ← ψ + Π_F(2Π_Oψ − ψ) − Π_Oψ (object Π_Oψ); β < 1 is RAAR
ψ ← β ψ + β Π_O(2Π_Fψ − ψ) + (1 − 2β) Π_Fψ (object Π_O Π_Fψ). The probe is not updated here.

Memory: one exit wave per position, POS × N1' × N2 × N3 complex (45 MB for the ptypy case at U = 1; 19 GB at
the seed's 400 positions — use it on small problems or with few positions per rank).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from analysis.bragg.solvers.epie import _modulus_and_background
from analysis.bragg.solvers.model import BraggData, BraggModel, BraggState
from analysis.xp import Array, array_module

__all__ = ["DMMemory", "DMStats", "step"]

_REL_FLOOR = 1e-6
"""Voxels whose illumination Σ_j |P_j|² is below this fraction of its maximum keep their value in Π_O."""


@dataclasses.dataclass(kw_only=True)
class DMMemory:
    """The exit waves ψ_j the iteration carries from one sweep to the next (kept on ``BraggState.dm_memory``)."""

    waves: list[Array | None]
    """ψ_j, one (N1', N2, N3) complex array per position (None for positions without data)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DMStats:
    """Diagnostics of one DM/RAAR iteration."""

    cost: float
    """Σ_j Σ ω (√h − √I)² / Σ ω I of the object this iteration returns (the ePIE cost's definition)."""
    probe_updated: bool = False
    """Always False: the probe is held."""
    kernels: str = "array"
    """The array code ran (no fused path)."""


def _probes(state: BraggState, data: BraggData, op: BraggModel) -> list[Array | None]:
    return [op.probe_at(state.probe, data.shifts_px[j]) if data.has_data(j) else None
            for j in range(data.n_positions)]


def _overlap(state: BraggState, data: BraggData, op: BraggModel, probes: list[Array | None], waves: list[Array | None],
             den: Array) -> Array:
    """Π_O: the object S · Σ P_j* ψ_j / Σ |P_j|² (old values where nothing shines)."""
    xp = array_module(state.object)
    num = xp.zeros_like(state.object)
    for j, (p, w) in enumerate(zip(probes, waves, strict=True)):
        if p is not None:
            num[op.view(data.offsets_vox[j])] += xp.conj(p) * w
    lit = den > _REL_FLOOR * float(xp.max(den))
    rho = xp.where(lit, num / xp.where(lit, den, 1.0), state.object)
    return xp.where(state.support, rho, 0).astype(state.object.dtype, copy=False)


def _fourier(state: BraggState, data: BraggData, op: BraggModel, waves: list[Array | None]) -> tuple[list[Any], float]:
    """Π_F of every exit wave and the summed misfit Σ ω (√h − √I)² of the waves given."""
    out: list[Any] = []  # arrays, None where a position has no data (Any: Nones pair up across lists)
    total = 0.0
    for j, w in enumerate(waves):
        if w is None:
            out.append(None)
            continue
        dq, _, misfit = _modulus_and_background(op.fourier.forward(w), data.intensities[j], state.background,
                                                data.mask_at(j), 0.0)
        total += float(misfit)
        out.append(w + op.fourier.adjoint(dq))
    return out, total


def step(state: BraggState, data: BraggData, *, op: BraggModel, beta: float = 1.0) -> tuple[BraggState, DMStats]:
    """One difference-map (β = 1) or RAAR (0 < β < 1) iteration; the object becomes this iteration's estimate.

    The exit waves start as P_j ρ_j of the current object and live on ``state.dm_memory`` between calls
    (set it to None to restart from the object). The probe and background are held.
    """
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"dm.step: beta must lie in (0, 1], got {beta}")
    xp = array_module(state.object)
    probes = _probes(state, data, op)
    den = xp.zeros(state.object.shape, dtype=state.object.real.dtype)
    for j, p in enumerate(probes):
        if p is not None:
            den[op.view(data.offsets_vox[j])] += p.real ** 2 + p.imag ** 2
    mem = state.dm_memory
    if not isinstance(mem, DMMemory):
        mem = DMMemory(waves=[None if p is None else p * state.object[op.view(data.offsets_vox[j])]
                              for j, p in enumerate(probes)])

    def views(rho: Array) -> list[Any]:  # as in _fourier: Any because the Nones pair up
        return [None if p is None else p * rho[op.view(data.offsets_vox[j])] for j, p in enumerate(probes)]

    psi = mem.waves
    if beta == 1.0:
        o = views(_overlap(state, data, op, probes, psi, den))
        f, _ = _fourier(state, data, op, [None if a is None else 2 * a - b for a, b in zip(o, psi, strict=True)])
        psi = [None if a is None else a + c - b for a, b, c in zip(psi, o, f, strict=True)]
        rho = _overlap(state, data, op, probes, psi, den)
    else:
        fm, _ = _fourier(state, data, op, psi)
        o = views(_overlap(state, data, op, probes, [None if a is None else 2 * a - b
                                                     for a, b in zip(fm, psi, strict=True)], den))
        psi = [None if a is None else beta * a + beta * b + (1.0 - 2.0 * beta) * c
               for a, b, c in zip(psi, o, fm, strict=True)]
        rho = _overlap(state, data, op, probes, _fourier(state, data, op, psi)[0], den)
    state.object = rho
    _, misfit = _fourier(state, data, op, views(rho))
    state.dm_memory = DMMemory(waves=psi)
    state.iteration += 1
    return state, DMStats(cost=misfit / max(data.measured_sum(), 1e-30))
