"""Maximum-likelihood refinement: amplitude-Gaussian / Poisson costs, gradients, PR-CG
(Thibault & Guizar-Sicairos 2012).

References: Thibault & Guizar-Sicairos, New J. Phys. 14, 063004 (2012),
doi:10.1088/1367-2630/14/6/063004; Godard et al., Opt. Express 20, 25914 (2012),
doi:10.1364/OE.20.025914; seed Eq 4 (Li et al. 2021).
"""

# Why this module is long: the ML solver (gradient, line search, conjugate directions, fused path) is one algorithm;
# its steps share the same preconditioned state.

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np

from analysis.bragg.solvers.distributed import Communicator, SerialCommunicator
from analysis.bragg.solvers.fused_cpu import FusedCpuML
from analysis.bragg.solvers.fused_gpu import FusedGpuML
from analysis.bragg.solvers.model import BraggData, BraggModel, BraggState
from analysis.bragg.solvers.options import Execution, MLOptions
from analysis.bragg.solvers.smoothness import (
    PriorSums,
    polynomial_value,
    prior_cost_and_gradient,
    prior_line_polynomial,
    roughness_maps,
)
from analysis.xp import Array, array_module, to_numpy

_TINY = 1e-30


@dataclasses.dataclass(kw_only=True)
class ExitWaves:
    """Ψ0_j = F(P_j ρ_j) of every position, kept by :func:`cost_and_gradient` for :func:`line_coefficients`."""

    kernels: str = ""
    """Which code filled ``waves``: "array" (Ψ0_j per position), "fused-cpu" or "fused-gpu" (unnormalised crops)."""
    waves: Any = None
    """One crop set: a list of (N1, N2, NM) arrays, or the fused path's (POS, N1, N2, NM) buffer."""
    state_key: StateStamp | None = None
    """Set by :func:`cost`: the :class:`StateStamp` of the state the waves were computed on. The accepted
    Armijo trial is the next iteration's state, so its gradient pass reuses them (after checking the stamp)."""


@dataclasses.dataclass(kw_only=True)
class MLMemory:
    """Conjugate-gradient memory carried in ``BraggState.ml_memory``."""

    mu_weights: np.ndarray
    """(POS,) μ_j = μ·max|P_j|², frozen when ML starts (keeps the cost differentiable)."""
    mu_map: Array | None = None
    """W = Σ_j μ_j S̄ on view j, (NO1, NO2, NO3) real: built once from the frozen weights, the
    offsets and S (fixed during ML), rebuilt only when ``state.support`` is another array."""
    mu_map_support: Array | None = None
    """The support array ``mu_map`` was built from."""
    probe_scale: float | None = None
    """Preconditioner s on the probe gradient."""
    exit_waves: ExitWaves | None = None
    """Ψ_j kept from one pass to the next (``Execution.keep_exit_waves``)."""
    grad: tuple[Array, Array] | None = None
    """Previous (g_ρ, g_P)."""
    direction: tuple[Array, Any] | None = None
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
    kernels: str = "array"
    """Which code ran the transforms: "array" (NumPy/CuPy array code), "fused-cpu" (Numba + FFTW) or "fused-gpu"
    (cuFFT + the CUDA kernels of :mod:`analysis.bragg.solvers.gpu_kernels`)."""


def mu_weights(state: BraggState, data: BraggData, op: BraggModel, mu: float) -> np.ndarray:
    """μ_j = μ·max|P_j|² for every position (POS,) float64."""
    xp = array_module(state.probe)
    peaks = [xp.max(pj.real ** 2 + pj.imag ** 2)
             for pj in (op.probe_at(state.probe, data.shifts_px[j]) for j in range(data.n_positions))]
    return mu * to_numpy(xp.stack(peaks)).astype(np.float64) if peaks else np.empty(0)   # one copy to the host


def build_mu_map(state: BraggState, data: BraggData, op: BraggModel, weights: np.ndarray) -> Array:
    """W = Σ_j μ_j S̄ restricted to view j: (NO1, NO2, NO3) real (the μ term of seed Eq 4 is Σ W|ρ|²)."""
    xp = array_module(state.object)
    w = xp.zeros(state.object.shape, dtype=state.object.real.dtype)
    for j in range(data.n_positions):
        if weights[j]:
            sl = op.view(data.offsets_vox[j])
            w[sl] += weights[j]
    w *= ~state.support
    return w


def _mu_cost(obj: Array, w: Array) -> float:
    """Σ W|ρ|², summed in float64."""
    xp = array_module(obj)
    return float(xp.sum(w * (obj.real ** 2 + obj.imag ** 2), dtype=np.float64))


def _data_term(psi_q: Array, inten: Array, b: Array, mask: Array, noise: str) -> tuple[Array, Array]:
    """(Σ ω ℓ(h, I), χ = ∂L/∂Ψ*) for one position
    (Thibault & Guizar-Sicairos 2012; amplitude ℓ: seed Eq 4); the sum is a 0-d
    float64 array on the data's device (the caller converts once per pass, not per position).
    """
    xp = array_module(psi_q)
    h = xp.maximum(psi_q.real ** 2 + psi_q.imag ** 2 + b, _TINY)
    if noise == "amplitude":
        sh = xp.sqrt(h)
        a = xp.sqrt(inten)
        cost = xp.sum(xp.where(mask, (sh - a) ** 2, 0.0), dtype=np.float64)
        chi = xp.where(mask, 1.0 - a / sh, 0.0)
    else:
        cost = xp.sum(xp.where(mask, h - inten * xp.log(h), 0.0), dtype=np.float64)
        chi = xp.where(mask, 1.0 - inten / h, 0.0)
    return cost, psi_q * chi.astype(psi_q.real.dtype)


def _fused(state: BraggState, op: BraggModel, execution: Execution | None) -> FusedCpuML | FusedGpuML | None:
    """The fused path: Numba + FFTW on NumPy arrays, CUDA kernels on CuPy arrays, or None (the array code)."""
    cpu = FusedCpuML.for_model(op, state, Execution() if execution is None else execution)
    return cpu if cpu is not None else FusedGpuML.for_model(op, state, execution)


def _kernels(fused: FusedCpuML | FusedGpuML | None) -> str:
    """The name of the code a fused path runs ("array" without one)."""
    return "array" if fused is None else getattr(fused, "kernels", "fused-cpu")


@dataclasses.dataclass(frozen=True, eq=False)
class StateStamp:
    """Identifies the state that kept Ψ_j = F(P_j ρ_j) belong to: copies of ρ and P2 on their device and
    a SHA-1 of the scan (offsets, shifts, which positions have data).

    :meth:`matches` compares values on the device (one pass, one scalar to the host), so a GPU run
    copies neither array to the host; the stamp holds one extra ρ and P2.
    """

    object: Array
    probe: Array
    scan: bytes

    @classmethod
    def of(cls, state: BraggState, data: BraggData) -> StateStamp:
        """Stamp of ``state`` (ρ and P2 copied: later in-place updates of the state do not move the stamp)."""
        return cls(object=state.object.copy(), probe=state.probe.copy(), scan=_scan_key(data))

    def matches(self, state: BraggState, data: BraggData) -> bool:
        """Whether ``state`` has exactly the stamped ρ, P2 and scan."""
        xp = array_module(state.object)
        return (self.object.shape == state.object.shape and self.probe.shape == state.probe.shape
                and self.object.dtype == state.object.dtype and self.probe.dtype == state.probe.dtype
                and self.scan == _scan_key(data)
                and bool(xp.array_equal(self.object, state.object)) and bool(xp.array_equal(self.probe, state.probe)))


def _scan_key(data: BraggData) -> bytes:
    h = hashlib.sha1()
    measured = np.array([data.has_data(j) for j in range(data.n_positions)])
    for a in (data.offsets_vox, data.shifts_px, measured):
        h.update(np.ascontiguousarray(to_numpy(a)).data)
    return h.digest()


def cost_and_gradient(state: BraggState, data: BraggData, *, op: BraggModel, options: MLOptions,
                      weights: np.ndarray, with_probe: bool = True, mu_map: Array | None = None,
                      exit_waves: ExitWaves | None = None, prior: PriorSums | None = None,
                      execution: Execution | None = None) -> tuple[float, Array, Array]:
    """L and its Wirtinger gradients (∇_ρ* L, ∇_{P2}* L) (Thibault & Guizar-Sicairos 2012; seed Eq 4 with the μ term).

    ∇_ρ* = Σ_j scatter(P_j* F^H χ_j) + Σ_j μ_j S̄ ρ; ∇_{P2}* = Σ_j Shift_{−g_j} B^H(ρ_j* F^H χ_j).
    ``mu_map``: W of :func:`build_mu_map` (built from ``weights`` when None). ``exit_waves``: receives
    Ψ0_j for :func:`line_coefficients`; if it already holds Ψ_j of this very state (kept by
    :func:`cost`, :attr:`ExitWaves.state_key` checked), the forward transforms are skipped.
    ``prior``: receives w0 = Σ_j|P_j|² and, with its ``roughness``, the smoothness prior's
    s Σ_j Shift_{−g_j} B^H(r0_j P_j) is added to ∇_{P2}* (module :mod:`analysis.bragg.solvers.smoothness`).
    ``execution`` (default :class:`Execution`) picks the fused CPU kernels or the array code.
    """
    xp = array_module(state.object)
    fused = _fused(state, op, execution)
    w0 = prior.start(state.object, 1)[0] if prior is not None else None
    r0 = prior.roughness if prior is not None and with_probe else None
    strength = prior.strength if prior is not None else 0.0
    kernels = _kernels(fused)
    kept: Any = None                                        # Ψ_j per position: the fused kernels' array or a list
    if exit_waves is not None:
        kept = fused.kept_waves(data.n_positions, exit_waves.waves) if fused is not None else exit_waves.waves
    reuse = (exit_waves is not None and exit_waves.state_key is not None and exit_waves.kernels == kernels
             and exit_waves.waves is not None and (fused is None or exit_waves.waves is kept)
             and exit_waves.state_key.matches(state, data))
    total: Array | float                                    # a 0-d device sum on the array path
    if fused is not None:
        total, g_obj, g_pr = fused.cost_and_gradient(state, data, options.noise_model == "poisson", with_probe, kept,
                                                     reuse, w0, r0, strength)
    else:
        g_obj = xp.zeros_like(state.object)
        g_pr = xp.zeros_like(state.probe)
        total = 0.0
        if exit_waves is not None and not reuse:
            kept = [None] * data.n_positions
        for j in range(data.n_positions):
            if not data.has_data(j):
                continue                                    # ω_j = 0 everywhere: no cost, χ_j = 0
            sl = op.view(data.offsets_vox[j])
            v = state.object[sl]
            pj = op.probe_at(state.probe, data.shifts_px[j])
            psi_q = kept[j] if reuse else op.fourier.forward(pj * v)
            c, chi = _data_term(psi_q, data.intensities[j], state.background, data.mask_at(j), options.noise_model)
            if kept is not None:
                kept[j] = psi_q
            total += c
            g = op.fourier.adjoint(chi)
            g_obj[sl] += xp.conj(pj) * g
            if w0 is not None:
                w0[sl] += pj.real ** 2 + pj.imag ** 2
            if with_probe:
                box = xp.conj(v) * g
                if r0 is not None:
                    box += (strength * r0[sl]) * pj
                g_pr += op.probe_adjoint(box, data.shifts_px[j])
        total = float(total)
    if exit_waves is not None:
        exit_waves.kernels, exit_waves.waves, exit_waves.state_key = kernels, kept, None
    w = build_mu_map(state, data, op, weights) if mu_map is None else mu_map
    total += _mu_cost(state.object, w)
    g_obj += w * state.object
    return total, g_obj, g_pr


def cost(state: BraggState, data: BraggData, *, op: BraggModel, options: MLOptions, weights: np.ndarray,
         mu_map: Array | None = None, exit_waves: ExitWaves | None = None, execution: Execution | None = None) -> float:
    """L(ρ, P2) only (no gradients): data term + Σ W|ρ|² (seed Eq 4 / Poisson, Thibault & Guizar-Sicairos 2012).

    ``exit_waves``: receives Ψ_j and the state's key (for the next :func:`cost_and_gradient`);
    ``execution`` as in :func:`cost_and_gradient`.
    """
    fused = _fused(state, op, execution)
    kept: Any = None                                        # Ψ_j per position: the fused kernels' array or a list
    if exit_waves is not None:
        previous, exit_waves.waves = exit_waves.waves, None          # the array path drops the previous set first
        kept = fused.kept_waves(data.n_positions, previous) if fused is not None else [None] * data.n_positions
        previous = None
    total: Array | float                                    # a 0-d device sum on the array path
    if fused is not None:
        total = fused.cost(state, data, options.noise_model == "poisson", kept)
    else:
        total = 0.0
        for j in range(data.n_positions):
            if data.has_data(j):
                sl = op.view(data.offsets_vox[j])
                psi_q = op.fourier.forward(op.probe_at(state.probe, data.shifts_px[j]) * state.object[sl])
                if kept is not None:
                    kept[j] = psi_q
                total += _data_term(psi_q, data.intensities[j], state.background, data.mask_at(j),
                                    options.noise_model)[0]
        total = float(total)
    if exit_waves is not None:
        exit_waves.kernels = _kernels(fused)
        exit_waves.waves, exit_waves.state_key = kept, StateStamp.of(state, data)
    w = build_mu_map(state, data, op, weights) if mu_map is None else mu_map
    return total + _mu_cost(state.object, w)


def _line_terms(p0: Array, p1: Array, p2: Array | None, inten: Array, b: Array, m: Array,
                noise: str) -> tuple[Array, Array]:
    """Data-term (L'(0), L''(0)) of one position from Ψ0, Ψ1, Ψ2 (Thibault & Guizar-Sicairos 2012).

    Elementwise in the inputs' precision, summed in float64; the amplitude a'' is written
    (A2 − A1²/(4A0))/a0 and the Poisson term I(A1/A0)², which neither overflow nor underflow in
    float32 where A0 is tiny.
    """
    xp = array_module(p0)
    a0 = xp.maximum(p0.real ** 2 + p0.imag ** 2 + b, _TINY)                 # A0 = h(0)
    a1 = 2.0 * (p0.real * p1.real + p0.imag * p1.imag)                      # A1 = 2Re(Ψ0*Ψ1)
    a2 = p1.real ** 2 + p1.imag ** 2                                        # A2 = |Ψ1|² + 2Re(Ψ0*Ψ2)
    if p2 is not None:
        a2 += 2.0 * (p0.real * p2.real + p0.imag * p2.imag)
    if noise == "poisson":
        f = 1.0 - inten / a0
        e1 = a1 * f
        e2 = 2.0 * a2 * f + inten * (a1 / a0) ** 2
    else:
        r0 = xp.sqrt(a0)
        res = r0 - xp.sqrt(inten)
        da = a1 / (2.0 * r0)
        dda = (a2 - a1 ** 2 / (4.0 * a0)) / r0
        e1 = 2.0 * res * da
        e2 = 2.0 * (da ** 2 + res * dda)
    return (xp.sum(xp.where(m, e1, 0.0), dtype=np.float64),          # 0-d on the device
            xp.sum(xp.where(m, e2, 0.0), dtype=np.float64))


def line_coefficients(state: BraggState, data: BraggData, *, op: BraggModel, options: MLOptions,
                      weights: np.ndarray, d_obj: Array, d_probe: Array | None, mu_map: Array | None = None,
                      exit_waves: ExitWaves | None = None, prior: PriorSums | None = None,
                      execution: Execution | None = None) -> tuple[float, float]:
    """(L'(0), L''(0)) along (Δρ, ΔP) from Ψ(t) = Ψ0 + tΨ1 + t²Ψ2 (Thibault & Guizar-Sicairos 2012, float64 sums).

    Ψ1 = F(P_jΔρ_j + ΔP_jρ_j), Ψ2 = F(ΔP_jΔρ_j); Ψ0 from ``exit_waves`` (kept by
    :func:`cost_and_gradient` on the same state and code path) or recomputed. ``prior``: receives
    w1 = Σ_j 2Re P_j*ΔP_j and w2 = Σ_j |ΔP_j|² when ``d_probe`` is given (no maps otherwise).
    ``execution`` as in :func:`cost_and_gradient`.
    """
    xp = array_module(state.object)
    fused = _fused(state, op, execution)
    kernels = _kernels(fused)
    kept = exit_waves.waves if exit_waves is not None and exit_waves.kernels == kernels else None
    w12 = None
    if prior is not None:
        w12 = prior.start(state.object, 2) if d_probe is not None else prior.start(state.object, 0)
    d1: Array | float                                       # 0-d device sums on the array path
    d2: Array | float
    if fused is not None:
        d1, d2 = fused.line_sums(state, data, options.noise_model == "poisson", d_obj, d_probe, kept,
                                 w12 if w12 else None)
    else:
        d1 = d2 = 0.0
        for j in range(data.n_positions):
            if not data.has_data(j):
                continue
            sl = op.view(data.offsets_vox[j])
            v, dv = state.object[sl], d_obj[sl]
            pj = op.probe_at(state.probe, data.shifts_px[j])
            p0 = op.fourier.forward(pj * v) if kept is None else kept[j]
            p2 = None
            if d_probe is not None:
                dpj = op.probe_at(d_probe, data.shifts_px[j])
                p1 = op.fourier.forward(pj * dv + dpj * v)
                p2 = op.fourier.forward(dpj * dv)
                if w12:
                    w12[0][sl] += 2.0 * (pj.real * dpj.real + pj.imag * dpj.imag)
                    w12[1][sl] += dpj.real ** 2 + dpj.imag ** 2
            else:
                p1 = op.fourier.forward(pj * dv)
            e1, e2 = _line_terms(p0, p1, p2, data.intensities[j], state.background, data.mask_at(j),
                                 options.noise_model)
            d1 += e1
            d2 += e2
        d1, d2 = float(d1), float(d2)                                   # one copy per pass
    w = build_mu_map(state, data, op, weights) if mu_map is None else mu_map
    d1 += 2.0 * float(xp.sum(w * (xp.conj(state.object) * d_obj).real, dtype=np.float64))
    d2 += 2.0 * _mu_cost(d_obj, w)
    return d1, d2


def _reduced_line(comm: Communicator, state: BraggState, data: BraggData, op: BraggModel, options: MLOptions,
                  mem: MLMemory, d_obj: Array, d_probe: Array | None, exit_waves: ExitWaves | None,
                  prior_w0: Any = None, execution: Execution | None = None) -> tuple[float, float, np.ndarray]:
    """:func:`line_coefficients` summed over ranks, and the smoothness prior's quartic R(t) along the
    direction (zeros without the prior; ``prior_w0``: the all-reduced w0 of the gradient pass).
    """
    sums = PriorSums(strength=options.smoothness) if options.smoothness else None
    d1, d2 = line_coefficients(state, data, op=op, options=options, weights=mem.mu_weights, d_obj=d_obj,
                               d_probe=d_probe, mu_map=mem.mu_map, exit_waves=exit_waves, prior=sums,
                               execution=execution)
    d1, d2 = comm.allreduce_scalar(d1), comm.allreduce_scalar(d2)
    if sums is None:
        return d1, d2, np.zeros(5)
    w_maps = (prior_w0,) + tuple(comm.allreduce_sum(m) for m in sums.maps)
    poly = prior_line_polynomial(state.object, d_obj, w_maps, options.smoothness)
    return d1 + float(poly[1]), d2 + 2.0 * float(poly[2]), poly     # Python floats: t must not promote ρ


def hold_spectral_centroid(g_probe: Array, probe: Array) -> Array:
    """``g_probe`` projected (real inner product) onto the directions δP2 that leave the centroid
    c = Σ f |P̂(f)|² / Σ |P̂|² of the probe's spectrum unchanged to first order.

    δc_a = (2/Σ|P̂|²) Re⟨v_a, δP2⟩ with v_a = F^H[(f_a − c_a) P̂] (F unitary, f in cycles per pixel of the
    (N2, N3) section): the component of ``g_probe`` in span(v_1, v_2) is removed. A linear phase ramp
    on P2 moves c, and is the probe half of the ramp ambiguity ρ e^{ig·r}, P e^{−ig·r}.
    """
    xp = array_module(probe)
    p_hat = xp.fft.fft2(probe, norm="ortho")
    power = p_hat.real ** 2 + p_hat.imag ** 2
    total = float(xp.sum(power))
    if total == 0:
        return g_probe
    freqs = xp.meshgrid(*(xp.fft.fftfreq(n) for n in probe.shape), indexing="ij")
    v = [xp.fft.ifft2((f - float(xp.sum(f * power)) / total) * p_hat, norm="ortho").astype(g_probe.dtype)
         for f in freqs]
    gram = np.array([[_rdot(a, b) for b in v] for a in v])
    coef = np.linalg.lstsq(gram, np.array([_rdot(a, g_probe) for a in v]), rcond=None)[0]
    out = g_probe.copy()
    for c, a in zip(coef, v, strict=True):
        out -= g_probe.real.dtype.type(c) * a
    return out


def _rdot(a: Array, b: Array) -> float:
    xp = array_module(a)
    return float(xp.vdot(a, b).real)


def step(state: BraggState, data: BraggData, *, op: BraggModel, options: MLOptions,
         comm: Communicator | None = None, execution: Execution | None = None) -> tuple[BraggState, MLStats]:
    """One Polak–Ribière CG iteration with the exact quadratic line search (Thibault & Guizar-Sicairos 2012).

    With ``comm`` each rank's ``data`` holds its own positions: the costs, the gradients and the
    line-search coefficients are sums over positions, so each is all-reduced (the μ term is
    linear in the per-position weights and reduces with them); the CG algebra then runs on the
    same replicated arrays on every rank. None: one process, nothing reduced.

    Transforms per position: gradient pass P_j, F^H, B^H (Ψ0 = F(P_jρ_j) is the accepted Armijo
    trial's, kept from the previous iteration; F only on the first iteration or when the state
    changed in between); line search P_j, F(PΔρ + ΔPρ) and, with the probe, ΔP_j and F(ΔPΔρ)
    (Ψ0 kept from the gradient pass); Armijo check P_j(t), F (kept for the next iteration).
    ``Execution(keep_exit_waves=False)`` recomputes Ψ0 in both places; ``execution`` (default
    :class:`Execution`) also picks the fused CPU kernels or the array code. The μ map is built once per ML run.
    """
    comm = SerialCommunicator() if comm is None else comm
    execution = Execution() if execution is None else execution
    mem = state.ml_memory
    if not isinstance(mem, MLMemory):
        mem = MLMemory(mu_weights=mu_weights(state, data, op, options.mu), probe_scale=options.probe_scale)
    if mem.mu_map is None or mem.mu_map_support is not state.support:
        mem.mu_map = build_mu_map(state, data, op, mem.mu_weights)
        mem.mu_map_support = state.support
    with_p = options.update_probe
    if not execution.keep_exit_waves:
        mem.exit_waves = None
    elif mem.exit_waves is None:
        mem.exit_waves = ExitWaves()
    kept = mem.exit_waves
    sm = options.smoothness
    # the data pass accumulates w0 and adds the prior's ∂R/∂P2* (module smoothness)
    sums = PriorSums(strength=sm, roughness=roughness_maps(state.object)[0] if with_p else None) if sm else None
    c0, g_o, g_p = cost_and_gradient(state, data, op=op, options=options, weights=mem.mu_weights, with_probe=with_p,
                                     mu_map=mem.mu_map, exit_waves=kept, prior=sums, execution=execution)
    kernels = kept.kernels if kept is not None else _kernels(_fused(state, op, execution))
    mem.mu_map_support = state.support                      # the fused path may have made S contiguous
    c0 = comm.allreduce_scalar(c0)
    g_o = comm.allreduce_sum(g_o)
    w0 = None
    if sums is not None:                     # smoothness prior on the reduced illumination (module smoothness)
        w0 = comm.allreduce_sum(sums.maps[0])
        r_cost, r_grad = prior_cost_and_gradient(state.object, w0, sm)
        c0 += r_cost
        g_o += r_grad
    if with_p:
        g_p = comm.allreduce_sum(g_p)
        if options.hold_probe_ramp:
            g_p = hold_spectral_centroid(g_p, state.probe)
    if options.support_mask_gradient:
        g_o = g_o * state.support
    if with_p and mem.probe_scale is None:
        gp2 = _rdot(g_p, g_p)
        mem.probe_scale = _rdot(g_o, g_o) / gp2 if gp2 > 0 else 1.0
    s = mem.probe_scale if with_p and mem.probe_scale is not None else 0.0   # set above whenever with_p
    gz = _rdot(g_o, g_o) + (s * _rdot(g_p, g_p) if with_p else 0.0)       # ⟨z, g⟩, z = M⁻¹g
    beta = 0.0
    if mem.grad is not None and mem.direction is not None and mem.gz > 0:
        cross = _rdot(g_o, mem.grad[0]) + (s * _rdot(g_p, mem.grad[1]) if with_p else 0.0)
        beta = max(0.0, (gz - cross) / mem.gz)                              # Polak–Ribière, restart at 0
    direction = mem.direction                                               # not None whenever beta ≠ 0
    d_o = -g_o + beta * direction[0] if beta and direction is not None else -g_o
    d_p = None
    if with_p:
        d_p = -s * g_p + beta * direction[1] if beta and direction is not None else -s * g_p
    d1, d2, poly = _reduced_line(comm, state, data, op, options, mem, d_o, d_p, kept, w0, execution)
    if d1 >= 0 and beta:                       # not a descent direction: restart along −z
        beta = 0.0
        d_o = -g_o
        d_p = -s * g_p if with_p else None
        d1, d2, poly = _reduced_line(comm, state, data, op, options, mem, d_o, d_p, kept, w0, execution)
    # exact minimiser of the local quadratic model, then a safeguard: the amplitude cost is not
    # smooth where |Ψ| → 0 (L'' from the Taylor model can be wildly off), so the step is halved
    # until the true cost does not rise (Armijo); t = 0 if nothing decreases the cost.
    t = -d1 / d2 if (d2 > 0 and d1 < 0) else (mem.last_step or 1e-3)
    for _ in range(30):
        trial = dataclasses.replace(state, object=state.object + t * d_o,
                                    probe=state.probe + t * d_p if d_p is not None else state.probe)
        trial_cost = comm.allreduce_scalar(cost(trial, data, op=op, options=options, weights=mem.mu_weights,
                                                 mu_map=mem.mu_map, exit_waves=kept, execution=execution))
        trial_cost += polynomial_value(poly, t)             # the prior's R(t): exact quartic, no pass
        if trial_cost <= c0 + 1e-4 * t * min(d1, 0.0):
            break
        t *= 0.5
    else:
        t = 0.0
        if kept is not None:
            kept.state_key = None              # the kept waves are a rejected trial's
    state.object += t * d_o
    if d_p is not None:
        state.probe += t * d_p
    mem.grad = (g_o, g_p)
    mem.direction = (d_o, d_p)
    mem.gz = gz
    mem.last_step = t
    state.ml_memory = mem
    state.iteration += 1
    return state, MLStats(cost=c0, step=t, beta=beta, kernels=kernels)
