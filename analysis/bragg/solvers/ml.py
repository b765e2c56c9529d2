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
from analysis.bragg.solvers.fused_cpu import FusedCpuML, line_views
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
    gradient: tuple[Any, Array, Array] | None = None
    """(L, ∇ρ*, ∇P2*) of the stamped state on this rank, not yet reduced: :func:`step`'s first Armijo trial
    computes them in the same pass as Ψ_j, so that, when it is accepted, the next iteration runs no gradient pass."""
    gradient_with_probe: bool = False
    """Whether ``gradient`` includes ∇P2* (``MLOptions.update_probe`` when it was computed)."""


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


def _mu_cost(obj: Array, w: Array) -> Array:
    """Σ W|ρ|², summed in float64 (0-d, on the arrays' device)."""
    xp = array_module(obj)
    return xp.sum(w * (obj.real ** 2 + obj.imag ** 2), dtype=np.float64)


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
        """Whether ``state`` has exactly the stamped ρ, P2 and scan (one scalar to the host)."""
        return bool(self.matches_on_device(state, data))

    def matches_on_device(self, state: BraggState, data: BraggData) -> Array | bool:
        """:meth:`matches` as a 0-d boolean on the arrays' device (False when shapes, dtypes or scan differ): no
        host sync, so :func:`step` can read it with the iteration's other scalars.
        """
        xp = array_module(state.object)
        if not (self.object.shape == state.object.shape and self.probe.shape == state.probe.shape
                and self.object.dtype == state.object.dtype and self.probe.dtype == state.probe.dtype
                and self.scan == _scan_key(data)):
            return False
        return xp.array_equal(self.object, state.object) & xp.array_equal(self.probe, state.probe)


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
    total, g_obj, g_pr = _cost_and_gradient(state, data, op=op, options=options, weights=weights,
                                            with_probe=with_probe, mu_map=mu_map, exit_waves=exit_waves, prior=prior,
                                            execution=execution)
    return float(total), g_obj, g_pr


def _cost_and_gradient(state: BraggState, data: BraggData, *, op: BraggModel, options: MLOptions,
                       weights: np.ndarray, with_probe: bool = True, mu_map: Array | None = None,
                       exit_waves: ExitWaves | None = None, prior: PriorSums | None = None,
                       execution: Execution | None = None,
                       trust_stamp: bool = False) -> tuple[Array | float, Array, Array]:
    """:func:`cost_and_gradient` with L as a 0-d device sum (no host sync). ``trust_stamp``: reuse kept Ψ_j whose
    stamp's scan matches without comparing ρ and P2 (:func:`step` checks that on the device and repeats the
    iteration if they differed).
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
             and (exit_waves.state_key.scan == _scan_key(data) if trust_stamp
                  else exit_waves.state_key.matches(state, data)))
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
    return float(_cost(state, data, op=op, options=options, weights=weights, mu_map=mu_map, exit_waves=exit_waves,
                       execution=execution))


def _cost(state: BraggState, data: BraggData, *, op: BraggModel, options: MLOptions, weights: np.ndarray,
          mu_map: Array | None = None, exit_waves: ExitWaves | None = None,
          execution: Execution | None = None) -> Array | float:
    """:func:`cost` as a 0-d device sum (no host sync)."""
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
    d1, d2 = _line_coefficients(state, data, op=op, options=options, weights=weights, d_obj=d_obj, d_probe=d_probe,
                                mu_map=mu_map, exit_waves=exit_waves, prior=prior, execution=execution)
    return float(d1), float(d2)


def _line_coefficients(state: BraggState, data: BraggData, *, op: BraggModel, options: MLOptions,
                       weights: np.ndarray, d_obj: Array, d_probe: Array | None, mu_map: Array | None = None,
                       exit_waves: ExitWaves | None = None, prior: PriorSums | None = None,
                       execution: Execution | None = None) -> tuple[Array | float, Array | float]:
    """:func:`line_coefficients` as 0-d device sums (no host sync)."""
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
        for j, sl, v, dv in line_views(state, data, op, d_obj):
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
    w = build_mu_map(state, data, op, weights) if mu_map is None else mu_map
    d1 += 2.0 * xp.sum(w * (xp.conj(state.object) * d_obj).real, dtype=np.float64)
    d2 += 2.0 * _mu_cost(d_obj, w)
    return d1, d2


def _reduce(comm: Communicator, x: Any) -> Any:
    """Sum of a scalar over ranks: ``x`` itself with one rank (a 0-d device array stays on its device: no host
    sync); with MPI the host sum of :meth:`Communicator.allreduce_scalar` (MPI stages through the host anyway).
    """
    return x if comm.size == 1 else comm.allreduce_scalar(float(x))


def _to_host(*values: Any) -> list[float]:
    """``values`` as Python floats: host numbers converted, device 0-d arrays copied together in one device→host
    copy (one host sync for all of them).
    """
    out = [0.0] * len(values)
    on_device = []
    for i, v in enumerate(values):
        if isinstance(v, (bool, int, float, np.generic, np.ndarray)):
            out[i] = float(v)
        else:
            on_device.append(i)
    if on_device:
        xp = array_module(values[on_device[0]])
        host = to_numpy(xp.stack([values[i].astype(np.float64) for i in on_device]))
        for k, i in enumerate(on_device):
            out[i] = float(host[k])
    return out


def _where(cond: Any, a: Any, b: Any) -> Any:
    """``where`` for the iteration's scalars, which are 0-d device arrays or host numbers (MPI's reduced sums): a
    host condition picks on the host, a device one on its device (``cupy.where`` needs an array condition).
    """
    if isinstance(cond, (bool, np.bool_, np.ndarray)):
        return a if bool(cond) else b
    return array_module(cond).where(cond, a, b)


def _f32(x: Any) -> Any:
    """A step-size scalar (float or 0-d array) as float32, so that it keeps complex64 arrays complex64."""
    return x.astype(np.float32) if hasattr(x, "astype") else np.float32(x)


def _reduced_line(comm: Communicator, state: BraggState, data: BraggData, op: BraggModel, options: MLOptions,
                  mem: MLMemory, d_obj: Array, d_probe: Array | None, exit_waves: ExitWaves | None,
                  prior_w0: Any = None, execution: Execution | None = None) -> tuple[Any, Any, np.ndarray]:
    """:func:`line_coefficients` summed over ranks (0-d device arrays with one rank: no host sync), and the
    smoothness prior's quartic R(t) along the direction (zeros without the prior; ``prior_w0``: the all-reduced w0
    of the gradient pass).
    """
    sums = PriorSums(strength=options.smoothness) if options.smoothness else None
    d1, d2 = _line_coefficients(state, data, op=op, options=options, weights=mem.mu_weights, d_obj=d_obj,
                                d_probe=d_probe, mu_map=mem.mu_map, exit_waves=exit_waves, prior=sums,
                                execution=execution)
    d1, d2 = _reduce(comm, d1), _reduce(comm, d2)
    if sums is None:
        return d1, d2, np.zeros(5)
    w_maps = (prior_w0,) + tuple(comm.allreduce_sum(m) for m in sums.maps)
    poly = prior_line_polynomial(state.object, d_obj, w_maps, options.smoothness)
    return d1 + float(poly[1]), d2 + 2.0 * float(poly[2]), poly


def hold_spectral_centroid(g_probe: Array, probe: Array) -> Array:
    """``g_probe`` projected (real inner product) onto the directions δP2 that leave the centroid
    c = Σ f |P̂(f)|² / Σ |P̂|² of the probe's spectrum unchanged to first order.

    δc_a = (2/Σ|P̂|²) Re⟨v_a, δP2⟩ with v_a = F^H[(f_a − c_a) P̂] (F unitary, f in cycles per pixel of the
    (N2, N3) section): the component of ``g_probe`` in span(v_1, v_2) is removed. A linear phase ramp
    on P2 moves c, and is the probe half of the ramp ambiguity ρ e^{ig·r}, P e^{−ig·r}. Computed on the arrays'
    device (the 2 × 2 least-squares solve in closed form, rank 2 or 1): no host sync.
    """
    xp = array_module(probe)
    p_hat = xp.fft.fft2(probe, norm="ortho")
    power = p_hat.real ** 2 + p_hat.imag ** 2
    total = xp.sum(power, dtype=np.float64)
    lit = total > 0
    safe_total = _where(lit, total, 1.0)
    freqs = xp.meshgrid(*(xp.fft.fftfreq(n) for n in probe.shape), indexing="ij")
    v = [xp.fft.ifft2((f - xp.sum(f * power, dtype=np.float64) / safe_total) * p_hat, norm="ortho").astype(
        g_probe.dtype) for f in freqs]
    g00, g01, g11 = _rdot(v[0], v[0]), _rdot(v[0], v[1]), _rdot(v[1], v[1])
    r0, r1 = _rdot(v[0], g_probe), _rdot(v[1], g_probe)
    det, trace = g00 * g11 - g01 * g01, g00 + g11
    rank2 = det > 1e-12 * trace * trace                     # else lstsq's minimum-norm solution G r / tr(G)²
    safe_det = _where(rank2, det, 1.0)
    tr2 = _where(trace > 0, trace * trace, 1.0)
    c0 = _where(rank2, (r0 * g11 - g01 * r1) / safe_det, (g00 * r0 + g01 * r1) / tr2)
    c1 = _where(rank2, (g00 * r1 - g01 * r0) / safe_det, (g01 * r0 + g11 * r1) / tr2)
    c0, c1 = _where(lit, c0, 0.0), _where(lit, c1, 0.0)
    return g_probe - _f32(c0) * v[0] - _f32(c1) * v[1]


def _rdot(a: Array, b: Array) -> Any:
    """Re⟨a, b⟩ as a 0-d float64 on the arrays' device (no host sync)."""
    xp = array_module(a)
    return xp.vdot(a, b).real.astype(np.float64)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Search:
    """One iteration's gradient, direction and accepted step, before the state is changed."""

    valid: bool
    """False: the kept Ψ_j were reused speculatively but ρ or P2 had changed since they were stamped."""
    cost: float = 0.0
    step: float = 0.0
    beta: float = 0.0
    grad: tuple[Array, Array] | None = None
    direction: tuple[Array, Any] | None = None
    gz: Any = 0.0
    probe_scale: Any = None
    kernels: str = "array"


def _search(state: BraggState, data: BraggData, op: BraggModel, options: MLOptions, comm: Communicator,
            execution: Execution, mem: MLMemory, kept: ExitWaves | None, speculate: bool) -> _Search:
    """Gradient pass, Polak–Ribière direction, line search and Armijo check of :func:`step`, all scalars on the
    arrays' device; one device→host copy per Armijo trial (the decision, the cost, t and β together).

    ``speculate``: reuse the kept Ψ_j on the strength of their stamp's scan and compare ρ, P2 with the stamp on
    the device; the comparison is read with the Armijo decision, and False there returns ``valid=False``
    (nothing changed: :func:`step` repeats the search without the kept waves).
    """
    valid: Any = True
    if speculate and kept is not None and kept.state_key is not None:
        valid = kept.state_key.matches_on_device(state, data)
        if valid is False:                   # shapes or scan differ: known on the host, nothing to speculate on
            speculate, valid = False, True
    with_p = options.update_probe
    sm = options.smoothness
    pre = None                       # (L, ∇ρ*, ∇P2*) from the previous iteration's accepted Armijo pass
    if kept is not None:
        if speculate and kept.gradient is not None and kept.gradient_with_probe == with_p and not sm:
            pre = kept.gradient
        kept.gradient = None
    # the data pass accumulates w0 and adds the prior's ∂R/∂P2* (module smoothness)
    sums = PriorSums(strength=sm, roughness=roughness_maps(state.object)[0] if with_p else None) if sm else None
    if pre is not None:              # checked against ρ, P2 with ``valid``, as the kept Ψ_j are
        c0, g_o, g_p = pre
    else:
        c0, g_o, g_p = _cost_and_gradient(state, data, op=op, options=options, weights=mem.mu_weights,
                                          with_probe=with_p, mu_map=mem.mu_map, exit_waves=kept, prior=sums,
                                          execution=execution, trust_stamp=speculate)
    kernels = kept.kernels if kept is not None else _kernels(_fused(state, op, execution))
    mem.mu_map_support = state.support                      # the fused path may have made S contiguous
    c0 = _reduce(comm, c0)
    g_o = comm.allreduce_sum(g_o)
    w0 = None
    if sums is not None:                     # smoothness prior on the reduced illumination (module smoothness)
        w0 = comm.allreduce_sum(sums.maps[0])
        r_cost, r_grad = prior_cost_and_gradient(state.object, w0, sm)
        c0 = c0 + r_cost
        g_o += r_grad
    if with_p:
        g_p = comm.allreduce_sum(g_p)
        if options.hold_probe_ramp:
            g_p = hold_spectral_centroid(g_p, state.probe)
    if options.support_mask_gradient:
        g_o = g_o * state.support
    gz = _rdot(g_o, g_o)                                                    # ⟨z, g⟩, z = M⁻¹g
    probe_scale = mem.probe_scale
    s: Any = 0.0
    if with_p:
        gp2 = _rdot(g_p, g_p)
        if probe_scale is None:
            probe_scale = _where(gp2 > 0, gz / _where(gp2 > 0, gp2, 1.0), 1.0)
        s = probe_scale
        gz = gz + s * gp2
    beta: Any = 0.0
    d_o = -g_o
    d_p = -_f32(s) * g_p if with_p else None
    prev = mem.direction
    if mem.grad is not None and prev is not None:
        cross = _rdot(g_o, mem.grad[0]) + (s * _rdot(g_p, mem.grad[1]) if with_p else 0.0)
        beta = _where(mem.gz > 0, _where(gz > cross, (gz - cross) / _where(mem.gz > 0, mem.gz, 1.0), 0.0), 0.0)
        # L'(0) along −z + β d_prev is 2(β Re⟨g, d_prev⟩ − ⟨z, g⟩): not a descent direction → restart along −z
        along_prev = _rdot(g_o, prev[0]) + (_rdot(g_p, prev[1]) if with_p else 0.0)
        beta = _where(beta * along_prev >= gz, 0.0, beta)                 # Polak–Ribière, restart at 0
        d_o = d_o + _f32(beta) * prev[0]
        if with_p:
            d_p = d_p + _f32(beta) * prev[1]
    d1, d2, poly = _reduced_line(comm, state, data, op, options, mem, d_o, d_p, kept, w0, execution)
    # exact minimiser of the local quadratic model, then a safeguard: the amplitude cost is not
    # smooth where |Ψ| → 0 (L'' from the Taylor model can be wildly off), so the step is halved
    # until the true cost does not rise (Armijo); t = 0 if nothing decreases the cost.
    fallback = mem.last_step if mem.last_step > 0 else 1e-3
    t = _where((d2 > 0) & (d1 < 0), -d1 / _where(d2 > 0, d2, 1.0), fallback)
    descent = _where(d1 < 0, d1, 0.0)
    t_host = c0_host = beta_host = 0.0
    accepted = False
    trial_grad = None
    for trial_no in range(30):
        trial = dataclasses.replace(state, object=state.object + _f32(t) * d_o,
                                    probe=state.probe + _f32(t) * d_p if d_p is not None else state.probe)
        # the first trial is usually accepted: its pass also computes the gradient there, for the next iteration
        if kept is not None and not sm and trial_no == 0:
            kept.state_key = None                                           # nothing of the trial is kept yet
            trial_grad = _cost_and_gradient(trial, data, op=op, options=options, weights=mem.mu_weights,
                                            with_probe=with_p, mu_map=mem.mu_map, exit_waves=kept,
                                            execution=execution)
            kept.state_key = StateStamp.of(trial, data)
            local_cost = trial_grad[0]
        else:
            trial_grad = None
            local_cost = _cost(trial, data, op=op, options=options, weights=mem.mu_weights, mu_map=mem.mu_map,
                               exit_waves=kept, execution=execution)
        trial_cost = _reduce(comm, local_cost)
        if sm:
            trial_cost = trial_cost + polynomial_value(poly, float(t))     # the prior's R(t): exact quartic, no pass
        ok = trial_cost <= c0 + 1e-4 * t * descent
        ok_host, valid_host, c0_host, t_host, beta_host = _to_host(ok, valid, c0, t, beta)   # the one host copy
        if comm.size > 1:
            valid_host = float(comm.allreduce_scalar(valid_host) == comm.size)
        if not valid_host:
            return _Search(valid=False)
        if ok_host:
            accepted = True
            if kept is not None and trial_grad is not None:
                kept.gradient, kept.gradient_with_probe = trial_grad, with_p
            break
        t = t * 0.5
    if not accepted:
        t_host = 0.0
        if kept is not None:
            kept.state_key = None              # the kept waves are a rejected trial's
    return _Search(valid=True, cost=c0_host, step=t_host, beta=beta_host, grad=(g_o, g_p), direction=(d_o, d_p),
                   gz=gz, probe_scale=probe_scale, kernels=kernels)


def step(state: BraggState, data: BraggData, *, op: BraggModel, options: MLOptions,
         comm: Communicator | None = None, execution: Execution | None = None) -> tuple[BraggState, MLStats]:
    """One Polak–Ribière CG iteration with the exact quadratic line search (Thibault & Guizar-Sicairos 2012).

    With ``comm`` each rank's ``data`` holds its own positions: the costs, the gradients and the
    line-search coefficients are sums over positions, so each is all-reduced (the μ term is
    linear in the per-position weights and reduces with them); the CG algebra then runs on the
    same replicated arrays on every rank. None: one process, nothing reduced.

    Transforms per position: line search P_j, F(PΔρ + ΔPρ) and, with the probe, ΔP_j and F(ΔPΔρ) (Ψ0 kept);
    the first Armijo trial P_j(t), F, χ, F^H, B^H: its cost, and the gradient the next iteration starts from when
    it is accepted (its Ψ_j kept as that iteration's Ψ0); later trials P_j(t), F. A gradient pass P_j, F, F^H,
    B^H runs only on the first iteration, when the state changed in between, when no trial was accepted at
    first, with the smoothness prior, or with ``Execution(keep_exit_waves=False)`` (which also recomputes Ψ0 in
    the line search). ``execution`` (default :class:`Execution`) also picks the fused CPU or GPU kernels or the
    array code. The μ map is built once per ML run.

    Every scalar of the iteration (costs, inner products, β, the restart test, t) stays on the arrays' device; the
    host reads them once, with the Armijo decision (once more per halving of t; the smoothness prior's R(t)
    reads t). The kept Ψ_j and gradient are reused on the strength of their stamp and checked against ρ and P2
    on the device in the same read; if the state changed in between, the iteration is repeated without them.
    """
    comm = SerialCommunicator() if comm is None else comm
    execution = Execution() if execution is None else execution
    mem = state.ml_memory
    if not isinstance(mem, MLMemory):
        mem = MLMemory(mu_weights=mu_weights(state, data, op, options.mu), probe_scale=options.probe_scale)
    if mem.mu_map is None or mem.mu_map_support is not state.support:
        mem.mu_map = build_mu_map(state, data, op, mem.mu_weights)
        mem.mu_map_support = state.support
    if not execution.keep_exit_waves:
        mem.exit_waves = None
    elif mem.exit_waves is None:
        mem.exit_waves = ExitWaves()
    kept = mem.exit_waves
    speculate = kept is not None and kept.state_key is not None
    found = _search(state, data, op, options, comm, execution, mem, kept, speculate)
    if not found.valid and kept is not None:        # ρ or P2 changed since the kept Ψ_j: repeat without them
        kept.state_key = None
        found = _search(state, data, op, options, comm, execution, mem, kept, False)
    assert found.direction is not None and found.grad is not None          # a non-speculative search is valid
    d_o, d_p = found.direction
    state.object += np.float32(found.step) * d_o
    if d_p is not None:
        state.probe += np.float32(found.step) * d_p
    mem.grad = found.grad
    mem.direction = found.direction
    mem.gz = found.gz
    mem.probe_scale = found.probe_scale
    mem.last_step = found.step
    state.ml_memory = mem
    state.iteration += 1
    return state, MLStats(cost=found.cost, step=found.step, beta=found.beta, kernels=found.kernels)
