"""Per-position ePIE-type update of 3D Bragg ptychography (seed Eqs 5–11, 13; docs/mpi.md).

References: Li et al., Nat. Commun. 12, 7059 (2021), doi:10.1038/s41467-021-27224-5,
Eqs 5–11 and 13; Maiden & Rodenburg, Ultramicroscopy 109, 1256 (2009) (ePIE).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from analysis.bragg.operators.probe import apply_fourier_mask_2d
from analysis.bragg.solvers.fused_cpu import FusedCpuSweep
from analysis.bragg.solvers.fused_gpu import FusedGpuSweep
from analysis.bragg.solvers.model import BraggData, BraggModel, BraggState, normalise_scale
from analysis.bragg.solvers.options import EpieOptions, Execution
from analysis.xp import Array, array_module

_TINY = 1e-30


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepStats:
    """Diagnostics of one sweep."""

    cost: float
    """Σ_j Σ ω (√h − √I)² / Σ ω I before each position's update (seed Eq 4 without μ)."""
    probe_updated: bool
    """Whether P2 was updated in this sweep."""
    kernels: str = "array"
    """Which code ran the sweep: "array" (NumPy/CuPy array code), "fused-cpu" (Numba + FFTW), "fused-gpu"
    (cuFFT + the CUDA kernels of :mod:`analysis.bragg.solvers.gpu_kernels`) or "dm"
    (a difference-map / RAAR sweep, :mod:`analysis.bragg.solvers.dm`)."""


def modulus_update(psi_q: Array, intensity: Array, background: Array, mask: Array) -> tuple[Array, Array, Array]:
    """Eq 13: Ψ' − Ψ with virtual planes/gaps free, and the amplitude misfit.

    Returns (Ψ' − Ψ ``(N1, N2, NM)``, h = |Ψ|² + b, Σ ω (√h − √I)²).
    """
    xp = array_module(psi_q)
    amp2 = (psi_q.real ** 2 + psi_q.imag ** 2)
    h = amp2 + background
    sqrt_h = xp.sqrt(xp.maximum(h, _TINY))
    a = xp.sqrt(intensity)
    # Ψ' = (|Ψ| + ω(a − |Ψ|)) Ψ/√h; on ω = 0 we keep Ψ (b = 0 there, "left free")
    factor = xp.where(mask, a / sqrt_h - 1.0, 0.0)
    misfit = xp.sum(xp.where(mask, (sqrt_h - a) ** 2, 0.0), dtype=xp.float64)
    return psi_q * factor.astype(psi_q.real.dtype), h, misfit


def update_background(background: Array, intensity: Array, h: Array, mask: Array, gamma: float) -> Array:
    """Eq 11: b ← b ((1 − γ) + γ √(I/h))² on ω = 1 (uses the old h)."""
    xp = array_module(background)
    if gamma == 0.0:
        return background
    ratio = xp.sqrt(intensity / xp.maximum(h, _TINY))
    new = background * ((1.0 - gamma) + gamma * ratio) ** 2
    return xp.where(mask, new, background).astype(background.dtype)


def _modulus_and_background(psi_q: Array, intensity: Array, background: Array, mask: Array,
                            gamma: float) -> tuple[Array, Array, Array]:
    """Eqs 13 and 11 fused, in place on ``psi_q``: (Ψ' − Ψ, new b, Σ ω (√h − √I)²).

    Same result as :func:`modulus_update` then :func:`update_background`, with √(I/h) computed
    once and the temporaries reused (about half the memory passes).
    """
    xp = array_module(psi_q)
    sqrt_h = psi_q.real ** 2
    sqrt_h += psi_q.imag ** 2
    sqrt_h += background
    xp.maximum(sqrt_h, _TINY, out=sqrt_h)
    xp.sqrt(sqrt_h, out=sqrt_h)                                  # √h
    ratio = xp.sqrt(intensity)
    d = sqrt_h - ratio
    d *= d
    misfit = xp.sum(xp.where(mask, d, 0.0), dtype=xp.float64)     # 0-d on the device: no sync per position
    ratio /= sqrt_h                                              # √I/√h = √(I/h)
    if gamma != 0.0:
        d = ratio * gamma
        d += 1.0 - gamma
        d *= d
        d *= background
        background = xp.where(mask, d, background).astype(background.dtype, copy=False)   # Eq 11
    ratio -= 1.0
    psi_q *= xp.where(mask, ratio, 0.0).astype(psi_q.real.dtype, copy=False)          # Eq 13, ω = 0 free
    return psi_q, background, misfit


def _exit_wave_correction(state: BraggState, data: BraggData, op: BraggModel, j: int,
                          gamma: float) -> tuple[Array, Array, Array, Array]:
    """ψ-space correction Δψ for position j; returns (V, P_j, Δψ, misfit). Updates b (Eq 11)."""
    sl = op.view(data.offsets_vox[j])
    v = state.object[sl].copy()
    pj = op.probe_at(state.probe, data.shifts_px[j])
    psi_q = op.fourier.forward(pj * v)
    inten = data.intensities[j]
    dpsi_q, state.background, misfit = _modulus_and_background(psi_q, inten, state.background, data.mask_at(j),
                                                               gamma)
    # = ψ' − ψ, replicated ×U (seed Eq 1; docs/geometry.md, Operators)
    dpsi = op.fourier.adjoint(dpsi_q)
    return v, pj, dpsi, misfit


def _probe_step(op: BraggModel, v: Array, dpsi: Array, shift: np.ndarray, alpha: float) -> tuple[Array, Array | float]:
    """Numerator and scalar/array denominator of Eqs 6, 8, 10 (projected with R)."""
    xp = array_module(v)
    v2 = v.real ** 2 + v.imag ** 2
    vmax = xp.max(v2)                                        # 0-d array, stays on the device
    grad = xp.conj(v) * dpsi                                 # Eq 8
    n1p = op.box_shape[0]
    if alpha == 1.0:                                         # Eq 10 with α = 1: scalar, R first
        return op.probe_adjoint(grad, shift) / n1p, vmax
    lam = (1.0 - alpha) * v2 + alpha * vmax
    return op.probe_adjoint(grad / xp.maximum(lam, _TINY), shift) / n1p, 1.0


def _positive(x: Array | float) -> Array | float:
    """max(x, tiny) for a Python float or a 0-d device array (no host sync)."""
    if isinstance(x, float):
        return max(x, _TINY)
    return array_module(x).maximum(x, _TINY)


def _sequential(state: BraggState, data: BraggData, op: BraggModel, options: EpieOptions,
                order: np.ndarray, update_probe: bool) -> float:
    xp = array_module(state.object)
    total: Array | float = 0.0                                             # a device scalar after the first position
    for j in order:
        if not data.has_data(int(j)):
            continue                                        # nothing measured yet: left free
        v, pj, dpsi, misfit = _exit_wave_correction(state, data, op, int(j), options.gamma)
        total += misfit
        lam = pj.real ** 2
        lam += pj.imag ** 2                                                         # |P_j|²
        pmax = xp.max(lam)
        sl = op.view(data.offsets_vox[j])
        mu_j = options.mu * pmax
        musbar = (~state.support[sl]).astype(lam.dtype)
        musbar *= mu_j                                                              # μ_j S̄
        lam *= 1.0 - options.beta
        lam += options.beta * pmax
        lam += musbar                                                               # Eq 9
        num = xp.conj(pj)
        num *= dpsi
        num -= musbar * v
        num /= lam
        num += v
        state.object[sl] = num                                                      # Eqs 5, 7
        if update_probe:
            num, den = _probe_step(op, v, dpsi, data.shifts_px[j], options.alpha)
            state.probe += num / _positive(den)                                      # Eq 6
    return float(total)


def _batched(state: BraggState, data: BraggData, op: BraggModel, options: EpieOptions,
             batches: list[np.ndarray], update_probe: bool) -> float:
    xp = array_module(state.object)
    total: Array | float = 0.0
    for batch in batches:
        num = xp.zeros_like(state.object)
        den = xp.zeros(state.object.shape, dtype=state.object.real.dtype)
        pnum = xp.zeros_like(state.probe)
        pden: Array | float = 0.0
        for j in batch:
            if not data.has_data(int(j)):
                continue
            v, pj, dpsi, misfit = _exit_wave_correction(state, data, op, int(j), options.gamma)
            total += misfit
            p2abs = pj.real ** 2 + pj.imag ** 2
            pmax = xp.max(p2abs)
            sl = op.view(data.offsets_vox[j])
            mu_j = options.mu * pmax
            sbar = (~state.support[sl]).astype(p2abs.dtype)
            num[sl] += xp.conj(pj) * dpsi - mu_j * sbar * v
            den[sl] += (1.0 - options.beta) * p2abs + options.beta * pmax + mu_j * sbar
            if update_probe:
                n, d = _probe_step(op, v, dpsi, data.shifts_px[j], options.alpha)
                if options.alpha == 1.0:                        # Σ R(ρ*Δψ) / Σ max|ρ|² (Eqs 6, 10)
                    pnum += n
                    pden += d
                else:                                           # Σ m_j R(ρ*Δψ/λ_j) / Σ m_j, m_j = max|ρ_j|²
                    m_j = xp.max(v.real ** 2 + v.imag ** 2)
                    pnum += n * m_j
                    pden += m_j
        touched = den > 0
        state.object += xp.where(touched, num / xp.where(touched, den, 1.0), 0)
        if update_probe:
            state.probe += pnum / _positive(pden)
    return float(total)


def spread_batches(positions: np.ndarray, n_batches: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split positions (POS, D) into ``n_batches`` batches whose members are far apart.

    Greedy: visit positions in random order and put each in the non-full batch whose
    nearest member is farthest (cf. Tike's spatially spread batches).
    """
    pos = np.asarray(positions, float)
    n = pos.shape[0]
    n_batches = max(1, min(int(n_batches), n))
    cap = -(-n // n_batches)
    members: list[list[int]] = [[] for _ in range(n_batches)]
    for j in rng.permutation(n):
        best, best_d = 0, -1.0
        for b in range(n_batches):
            if len(members[b]) >= cap:
                continue
            d = np.inf if not members[b] else float(np.min(np.sum((pos[members[b]] - pos[j]) ** 2, axis=1)))
            if d > best_d:
                best, best_d = b, d
        members[best].append(int(j))
    return [np.asarray(m, dtype=np.int64) for m in members if m]


def step(state: BraggState, data: BraggData, *, op: BraggModel, options: EpieOptions,
         rng: np.random.Generator | None = None,
         execution: Execution | None = None) -> tuple[BraggState, SweepStats]:
    """One sweep (iteration) of seed Eqs 5–11, 13 over all positions in random order.

    Object: Eqs 5, 7, 9 with the μ thickness-support term; probe: Eqs 6, 8, 10 through R
    (from sweep ``probe_update_start_iter``); background: Eq 11; modulus: Eq 13 on the
    folded measured planes. Afterwards the NA mask is applied to P2 and the ρ/P scale fixed.
    ``execution`` (default :class:`Execution`) picks the fused CPU kernels or the array code.
    """
    rng = np.random.default_rng() if rng is None else rng
    it = state.iteration
    if it < options.dm_iterations:                      # difference map / RAAR first (probe held)
        from analysis.bragg.solvers import dm

        state, dstats = dm.step(state, data, op=op, beta=options.dm_beta)
        if options.normalise_scale:
            state = normalise_scale(state)
        return state, SweepStats(cost=dstats.cost, probe_updated=False, kernels="dm")
    state.dm_memory = None
    update_probe = options.update_probe and it >= options.probe_update_start_iter
    if options.n_batches:
        batches = spread_batches(data.offsets_vox.astype(float) + np.pad(data.shifts_px, ((0, 0), (1, 0))),
                                 options.n_batches, rng)
        cost = _batched(state, data, op, options, [batches[i] for i in rng.permutation(len(batches))],
                        update_probe)
        kernels = "array"
    else:
        order = rng.permutation(data.n_positions)
        fused = FusedCpuSweep.for_model(op, state, Execution() if execution is None else execution)
        gpu = FusedGpuSweep.for_model(op, state, execution) if fused is None else None
        if gpu is not None:                             # NA mask and ρ/P scale done on the device
            na_on = update_probe and op.na_mask is not None and it < options.na_mask_stop_iter
            cost = gpu.sweep(state, data, options, order, update_probe, na_on, options.normalise_scale)
            state.iteration = it + 1
            return state, SweepStats(cost=cost / max(data.measured_sum(), _TINY), probe_updated=update_probe,
                                     kernels="fused-gpu")
        if fused is None:
            cost, kernels = _sequential(state, data, op, options, order, update_probe), "array"
        else:
            cost, kernels = fused.sweep(state, data, options, order, update_probe), "fused-cpu"
    if update_probe and op.na_mask is not None and it < options.na_mask_stop_iter:
        state.probe = apply_fourier_mask_2d(state.probe, op.na_mask)
    if options.normalise_scale:
        state = normalise_scale(state)
    norm = data.measured_sum()
    state.iteration = it + 1
    return state, SweepStats(cost=cost / max(norm, _TINY), probe_updated=update_probe, kernels=kernels)
