"""Maximum-likelihood refinement: amplitude-Gaussian / Poisson costs, gradients, PR-CG (spec 3).

References: Thibault & Guizar-Sicairos, New J. Phys. 14, 063004 (2012),
doi:10.1088/1367-2630/14/6/063004; Godard et al., Opt. Express 20, 25914 (2012),
doi:10.1364/OE.20.025914; seed Eq 4 (Li et al. 2021).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from analysis.solvers.distributed import Communicator, SerialCommunicator
from analysis.solvers.model import BraggData, BraggModel, BraggState
from analysis.solvers.options import MLOptions
from analysis.solvers.smoothness import (illumination_maps, prior_cost, prior_line_coefficients,
                                         prior_object_gradient, prior_probe_gradient)
from analysis.xp import array_module

_TINY = 1e-30


@dataclasses.dataclass(kw_only=True)
class MLMemory:
    """Conjugate-gradient memory carried in ``BraggState.ml_memory``."""

    mu_weights: np.ndarray
    """(POS,) μ_j = μ·max|P_j|², frozen when ML starts (keeps the cost differentiable)."""
    probe_scale: float | None = None
    """Preconditioner s on the probe gradient."""
    grad: tuple[Any, Any] | None = None
    """Previous (g_ρ, g_P)."""
    direction: tuple[Any, Any] | None = None
    """Previous search direction (Δρ, ΔP)."""
    gz: float = 0.0
    """⟨z, g⟩ of the previous iteration (PR denominator)."""
    last_step: float = 0.0
    """Previous step length t."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MLStats:
    """Diagnostics of one ML iteration."""

    cost: float
    """Cost before the step (data term + μ term)."""
    step: float
    """Step length t along the search direction."""
    beta: float
    """Polak–Ribière β used (0 = restart)."""


def mu_weights(state: BraggState, data: BraggData, op: BraggModel, mu: float) -> np.ndarray:
    """μ_j = μ·max|P_j|² for every position (POS,) float64."""
    xp = array_module(state.probe)
    out = np.empty(data.n_positions)
    for j in range(data.n_positions):
        pj = op.probe_at(state.probe, data.shifts_px[j])
        out[j] = mu * float(xp.max(pj.real ** 2 + pj.imag ** 2))
    return out


def _mu_map(state: BraggState, data: BraggData, op: BraggModel, weights: np.ndarray) -> Any:
    """W = Σ_j μ_j S̄ restricted to view j: (NO1, NO2, NO3) real."""
    xp = array_module(state.object)
    w = xp.zeros(state.object.shape, dtype=state.object.real.dtype)
    for j in range(data.n_positions):
        if weights[j]:
            sl = op.view(data.offsets_vox[j])
            w[sl] += weights[j]
    return w * (~state.support)


def _data_term(psi_q: Any, inten: Any, b: Any, mask: Any, noise: str) -> tuple[float, Any]:
    """(Σ ω ℓ(h, I), χ = ∂L/∂Ψ*) for one position."""
    xp = array_module(psi_q)
    h = xp.maximum(psi_q.real ** 2 + psi_q.imag ** 2 + b, _TINY)
    if noise == "amplitude":
        sh = xp.sqrt(h)
        a = xp.sqrt(inten)
        cost = float(xp.sum(xp.where(mask, (sh - a) ** 2, 0.0)))
        chi = xp.where(mask, 1.0 - a / sh, 0.0)
    else:
        cost = float(xp.sum(xp.where(mask, h - inten * xp.log(h), 0.0)))
        chi = xp.where(mask, 1.0 - inten / h, 0.0)
    return cost, psi_q * chi.astype(psi_q.real.dtype)


def cost_and_gradient(state: BraggState, data: BraggData, *, op: BraggModel, options: MLOptions,
                      weights: np.ndarray, with_probe: bool = True) -> tuple[float, Any, Any]:
    """L and its Wirtinger gradients (∇_ρ* L, ∇_{P2}* L) (spec 3).

    ∇_ρ* = Σ_j scatter(P_j* F^H χ_j) + Σ_j μ_j S̄ ρ; ∇_{P2}* = Σ_j Shift_{−g_j} B^H(ρ_j* F^H χ_j).
    """
    xp = array_module(state.object)
    g_obj = xp.zeros_like(state.object)
    g_pr = xp.zeros_like(state.probe)
    total = 0.0
    for j in range(data.n_positions):
        sl = op.view(data.offsets_vox[j])
        v = state.object[sl]
        pj = op.probe_at(state.probe, data.shifts_px[j])
        c, chi = _data_term(op.fourier.forward(pj * v), data.intensities[j], state.background, data.mask_at(j),
                            options.noise_model)
        total += c
        g = op.fourier.adjoint(chi)
        g_obj[sl] += xp.conj(pj) * g
        if with_probe:
            g_pr += op.probe_adjoint(xp.conj(v) * g, data.shifts_px[j])
    w = _mu_map(state, data, op, weights)
    total += float(xp.sum(w * (state.object.real ** 2 + state.object.imag ** 2)))
    g_obj += w * state.object
    return total, g_obj, g_pr


def cost(state: BraggState, data: BraggData, *, op: BraggModel, options: MLOptions, weights: np.ndarray) -> float:
    """L(ρ, P2) only (no gradients)."""
    xp = array_module(state.object)
    total = 0.0
    for j in range(data.n_positions):
        sl = op.view(data.offsets_vox[j])
        psi_q = op.fourier.forward(op.probe_at(state.probe, data.shifts_px[j]) * state.object[sl])
        total += _data_term(psi_q, data.intensities[j], state.background, data.mask_at(j), options.noise_model)[0]
    w = _mu_map(state, data, op, weights)
    return total + float(xp.sum(w * (state.object.real ** 2 + state.object.imag ** 2)))


def line_coefficients(state: BraggState, data: BraggData, *, op: BraggModel, options: MLOptions,
                      weights: np.ndarray, d_obj: Any, d_probe: Any) -> tuple[float, float]:
    """(L'(0), L''(0)) along (Δρ, ΔP) from Ψ(t) = Ψ0 + tΨ1 + t²Ψ2 (spec 3, float64 sums)."""
    xp = array_module(state.object)
    d1 = d2 = 0.0
    use_p = d_probe is not None
    for j in range(data.n_positions):
        sl = op.view(data.offsets_vox[j])
        v, dv = state.object[sl], d_obj[sl]
        pj = op.probe_at(state.probe, data.shifts_px[j])
        p0 = op.fourier.forward(pj * v)
        if use_p:
            dpj = op.probe_at(d_probe, data.shifts_px[j])
            p1 = op.fourier.forward(pj * dv + dpj * v)
            p2 = op.fourier.forward(dpj * dv)
        else:
            p1 = op.fourier.forward(pj * dv)
            p2 = None
        a0 = xp.maximum(p0.real ** 2 + p0.imag ** 2 + state.background, _TINY).astype(np.float64)
        a1 = (2.0 * (xp.conj(p0) * p1).real).astype(np.float64)
        a2 = (p1.real ** 2 + p1.imag ** 2).astype(np.float64)
        if p2 is not None:
            a2 = a2 + 2.0 * (xp.conj(p0) * p2).real
        inten = data.intensities[j].astype(np.float64)
        m = data.mask_at(j)
        if options.noise_model == "poisson":
            d1 += float(xp.sum(xp.where(m, a1 * (1.0 - inten / a0), 0.0)))
            d2 += float(xp.sum(xp.where(m, 2.0 * a2 * (1.0 - inten / a0) + inten * a1 ** 2 / a0 ** 2, 0.0)))
        else:
            r0 = xp.sqrt(a0)
            amp = xp.sqrt(inten)
            da = a1 / (2.0 * r0)
            dda = a2 / r0 - a1 ** 2 / (4.0 * r0 ** 3)
            d1 += 2.0 * float(xp.sum(xp.where(m, (r0 - amp) * da, 0.0)))
            d2 += 2.0 * float(xp.sum(xp.where(m, da ** 2 + (r0 - amp) * dda, 0.0)))
    w = _mu_map(state, data, op, weights)
    d1 += 2.0 * float(xp.sum(w * (xp.conj(state.object) * d_obj).real))
    d2 += 2.0 * float(xp.sum(w * (d_obj.real ** 2 + d_obj.imag ** 2)))
    return d1, d2


def _reduced_line(comm: Communicator, state: BraggState, data: BraggData, op: BraggModel, options: MLOptions,
                  weights: np.ndarray, d_obj: Any, d_probe: Any) -> tuple[float, float]:
    """:func:`line_coefficients` summed over ranks."""
    d1, d2 = line_coefficients(state, data, op=op, options=options, weights=weights, d_obj=d_obj, d_probe=d_probe)
    return comm.allreduce_scalar(d1), comm.allreduce_scalar(d2)


def _illumination(comm: Communicator, probe: Any, data: BraggData, op: BraggModel, object_shape: tuple[int, ...],
                  direction: Any = None) -> tuple[Any, ...]:
    """:func:`analysis.solvers.smoothness.illumination_maps` summed over ranks."""
    return tuple(comm.allreduce_sum(m) for m in illumination_maps(probe, data, op, object_shape, direction))


def _line_with_prior(comm: Communicator, state: BraggState, data: BraggData, op: BraggModel, options: MLOptions,
                     weights: np.ndarray, d_obj: Any, d_probe: Any) -> tuple[float, float]:
    """:func:`_reduced_line` plus the smoothness prior's (R'(0), R''(0)) on the reduced illumination maps."""
    d1, d2 = _reduced_line(comm, state, data, op, options, weights, d_obj, d_probe)
    if options.smoothness:
        w_maps = _illumination(comm, state.probe, data, op, state.object.shape, d_probe)
        p1, p2 = prior_line_coefficients(state.object, d_obj, w_maps, options.smoothness)
        d1, d2 = d1 + p1, d2 + p2
    return d1, d2


def _rdot(a: Any, b: Any) -> float:
    xp = array_module(a)
    return float(xp.vdot(a, b).real)


def step(state: BraggState, data: BraggData, *, op: BraggModel, options: MLOptions,
         comm: Communicator | None = None) -> tuple[BraggState, MLStats]:
    """One Polak–Ribière CG iteration with the exact quadratic line search (spec 3).

    With ``comm`` each rank's ``data`` holds its own positions: the costs, the gradients and the
    line-search coefficients are sums over positions, so each is all-reduced (the μ term is
    linear in the per-position weights and reduces with them); the CG algebra then runs on the
    same replicated arrays on every rank. None: one process, nothing reduced.
    """
    comm = SerialCommunicator() if comm is None else comm
    mem = state.ml_memory
    if not isinstance(mem, MLMemory):
        mem = MLMemory(mu_weights=mu_weights(state, data, op, options.mu), probe_scale=options.probe_scale)
    with_p = options.update_probe
    sm = options.smoothness
    c0, g_o, g_p = cost_and_gradient(state, data, op=op, options=options, weights=mem.mu_weights, with_probe=with_p)
    if sm and with_p:                        # per-position sum: reduced with the data term's probe gradient
        g_p += prior_probe_gradient(state.object, state.probe, data, op, sm)
    c0 = comm.allreduce_scalar(c0)
    g_o = comm.allreduce_sum(g_o)
    if sm:                                   # smoothness prior on the reduced illumination (module smoothness)
        w0 = _illumination(comm, state.probe, data, op, state.object.shape)[0]
        c0 += prior_cost(state.object, w0, sm)
        g_o += prior_object_gradient(state.object, w0, sm)
    if with_p:
        g_p = comm.allreduce_sum(g_p)
    if options.support_mask_gradient:
        g_o = g_o * state.support
    if with_p and mem.probe_scale is None:
        gp2 = _rdot(g_p, g_p)
        mem.probe_scale = _rdot(g_o, g_o) / gp2 if gp2 > 0 else 1.0
    s = mem.probe_scale if with_p else 0.0
    gz = _rdot(g_o, g_o) + (s * _rdot(g_p, g_p) if with_p else 0.0)       # ⟨z, g⟩, z = M⁻¹g
    beta = 0.0
    if mem.grad is not None and mem.direction is not None and mem.gz > 0:
        cross = _rdot(g_o, mem.grad[0]) + (s * _rdot(g_p, mem.grad[1]) if with_p else 0.0)
        beta = max(0.0, (gz - cross) / mem.gz)                              # Polak–Ribière, restart at 0
    d_o = -g_o + beta * mem.direction[0] if beta else -g_o
    d_p = None
    if with_p:
        d_p = -s * g_p + beta * mem.direction[1] if beta else -s * g_p
    d1, d2 = _line_with_prior(comm, state, data, op, options, mem.mu_weights, d_o, d_p)
    if d1 >= 0 and beta:                       # not a descent direction: restart along −z
        beta = 0.0
        d_o = -g_o
        d_p = -s * g_p if with_p else None
        d1, d2 = _line_with_prior(comm, state, data, op, options, mem.mu_weights, d_o, d_p)
    # exact minimiser of the local quadratic model, then a safeguard: the amplitude cost is not
    # smooth where |Ψ| → 0 (L'' from the Taylor model can be wildly off), so the step is halved
    # until the true cost does not rise (Armijo); t = 0 if nothing decreases the cost.
    t = -d1 / d2 if (d2 > 0 and d1 < 0) else (mem.last_step or 1e-3)
    for _ in range(30):
        trial = dataclasses.replace(state, object=state.object + t * d_o,
                                    probe=state.probe + t * d_p if d_p is not None else state.probe)
        trial_cost = comm.allreduce_scalar(cost(trial, data, op=op, options=options, weights=mem.mu_weights))
        if sm:
            trial_w0 = w0 if d_p is None else _illumination(comm, trial.probe, data, op, state.object.shape)[0]
            trial_cost += prior_cost(trial.object, trial_w0, sm)
        if trial_cost <= c0 + 1e-4 * t * min(d1, 0.0):
            break
        t *= 0.5
    else:
        t = 0.0
    state.object += t * d_o
    if d_p is not None:
        state.probe += t * d_p
    mem.grad = (g_o, g_p)
    mem.direction = (d_o, d_p)
    mem.gz = gz
    mem.last_step = t
    state.ml_memory = mem
    state.iteration += 1
    return state, MLStats(cost=c0, step=t, beta=beta)
