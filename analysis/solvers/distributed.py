"""Positions split across ranks: mini-batch / full-batch rPIE with all-reduced sums (spec 2.4 B/C).

Each rank owns the positions j ≡ rank (mod size) and adds its share of the batch sums of
spec 2.4 (B):

    ρ ← ρ + Σ_{j∈B}[P_j*Δψ_j − μ_j S̄ρ] / Σ_{j∈B}[(1−β)|P_j|² + βP_{j,max} + μ_j S̄]     (seed Eqs 5, 7, 9)
    P2 ← P2 + Σ_{j∈B} R(ρ_j*Δψ_j) / Σ_{j∈B} max|ρ_j|²                                 (Eqs 6, 8, 10, α = 1)
    b ← b Π_{j∈B} ((1−γ) + γ√(I_j/h_j))²  on ω_j = 1                                   (Eq 11, b fixed in a batch)

The sums are all-reduced, so every rank holds the same ρ, P2 and b after each batch (as in
ptypy's MPI engines and the seed's 4-GPU run). ``n_batches = 1`` is the full-batch variant (C).
Results do not depend on the number of ranks beyond floating-point summation order.
The :class:`Communicator` interface hides MPI: :class:`SerialCommunicator` for one process,
:func:`mpi_communicator` for ``mpi4py`` (host buffers; CuPy arrays are staged through NumPy).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from analysis.operators.probe import apply_fourier_mask_2d
from analysis.solvers.epie import SweepStats, modulus_update, spread_batches
from analysis.solvers.model import BraggData, BraggModel, BraggState, normalise_scale
from analysis.solvers.options import EpieOptions
from analysis.xp import array_module, to_numpy

_TINY = 1e-30


class Communicator(Protocol):
    """The reductions the distributed solver needs (a subset of MPI's)."""

    rank: int
    size: int

    def allreduce_sum(self, a: Any) -> Any:
        """Element-wise sum of ``a`` over ranks; returns an array like ``a`` (same backend)."""
        ...

    def allreduce_scalar(self, x: float) -> float:
        """Sum of the float ``x`` over ranks."""
        ...


@dataclass(frozen=True)
class SerialCommunicator:
    """One rank: every reduction is the identity."""

    rank: int = 0
    size: int = 1

    def allreduce_sum(self, a: Any) -> Any:
        """Return ``a`` (one rank)."""
        return a

    def allreduce_scalar(self, x: float) -> float:
        """Return ``x`` (one rank)."""
        return float(x)


class MPICommunicator:
    """``mpi4py`` communicator wrapper: in-place ``Allreduce(SUM)`` on host buffers."""

    def __init__(self, comm: Any) -> None:
        self._comm = comm
        self._mpi = importlib.import_module("mpi4py.MPI")
        self.rank = int(comm.Get_rank())
        self.size = int(comm.Get_size())

    def allreduce_sum(self, a: Any) -> Any:
        """Sum over ranks; CuPy arrays go through host memory (no CUDA-aware MPI assumed)."""
        if self.size == 1:
            return a
        xp = array_module(a)
        buf = np.ascontiguousarray(to_numpy(a))
        self._comm.Allreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)
        return xp.asarray(buf)

    def allreduce_scalar(self, x: float) -> float:
        """Sum of a float over ranks."""
        return float(self._comm.allreduce(float(x), op=self._mpi.SUM))


def mpi_communicator() -> MPICommunicator:
    """``COMM_WORLD`` through mpi4py (install ``pxm[mpi]`` and an MPI library, e.g. Open MPI)."""
    try:
        mpi = importlib.import_module("mpi4py.MPI")
    except ImportError as exc:
        raise RuntimeError("mpi_communicator: mpi4py is not installed; `pip install pxm[mpi]` needs an MPI "
                           "library (Debian: apt-get install libopenmpi-dev openmpi-bin)") from exc
    return MPICommunicator(mpi.COMM_WORLD)


def owned_positions(n_positions: int, comm: Communicator) -> np.ndarray:
    """Global indices of the positions this rank processes: j ≡ rank (mod size)."""
    return np.arange(comm.rank, n_positions, comm.size, dtype=np.int64)


def step(state: BraggState, data: BraggData, *, op: BraggModel, options: EpieOptions,
         comm: Communicator = SerialCommunicator(), rng: np.random.Generator | None = None) -> tuple[BraggState, SweepStats]:
    """One sweep of the batched update of spec 2.4 (B/C) with sums all-reduced over ranks.

    ``options.n_batches`` spatially spread batches (0 or 1: one full batch). ``rng`` must be
    seeded identically on every rank (it draws the batches and their order); ``data`` must
    hold at least the positions this rank owns (:func:`owned_positions`). Only α = 1 (scalar
    probe step, Eq 10) is supported here.
    """
    if options.alpha != 1.0:
        raise ValueError(f"distributed.step: alpha must be 1 (scalar probe step), got {options.alpha}")
    rng = np.random.default_rng(0) if rng is None else rng
    xp = array_module(state.object)
    it = state.iteration
    update_probe = options.update_probe and it >= options.probe_update_start_iter
    n_b = max(1, options.n_batches)
    pos = data.offsets_vox.astype(float) + np.pad(data.shifts_px, ((0, 0), (1, 0)))
    batches = spread_batches(pos, n_b, rng)
    mine = set(owned_positions(data.n_positions, comm).tolist())
    rdt = state.object.real.dtype
    total = 0.0
    for bi in rng.permutation(len(batches)):
        num = xp.zeros_like(state.object)
        den = xp.zeros(state.object.shape, dtype=rdt)
        pnum = xp.zeros_like(state.probe)
        log_b = xp.zeros(state.background.shape, dtype=rdt)
        pden = 0.0
        for j in batches[bi]:
            j = int(j)
            if j not in mine or not data.has_data(j):
                continue
            sl = op.view(data.offsets_vox[j])
            v = state.object[sl]
            pj = op.probe_at(state.probe, data.shifts_px[j])
            mask = data.mask_at(j)
            inten = data.intensities[j]
            dpsi_q, h, misfit = modulus_update(op.fourier.forward(pj * v), inten, state.background, mask)
            total += misfit
            dpsi = op.fourier.adjoint(dpsi_q)
            if options.gamma:
                f = (1.0 - options.gamma) + options.gamma * xp.sqrt(inten / xp.maximum(h, _TINY))
                log_b += xp.where(mask, 2.0 * xp.log(xp.maximum(f, _TINY)), 0.0).astype(rdt)
            p2abs = pj.real ** 2 + pj.imag ** 2
            pmax = float(xp.max(p2abs))
            mu_j = options.mu * pmax
            musbar = xp.where(state.support[sl], 0.0, mu_j).astype(rdt)
            num[sl] += xp.conj(pj) * dpsi - musbar * v
            den[sl] += (1.0 - options.beta) * p2abs + options.beta * pmax + musbar
            if update_probe:
                vmax = float(xp.max(v.real ** 2 + v.imag ** 2))
                pnum += op.probe_adjoint(xp.conj(v) * dpsi, data.shifts_px[j]) / op.box_shape[0]
                pden += vmax
        num = comm.allreduce_sum(num)
        den = comm.allreduce_sum(den)
        touched = den > 0
        state.object += xp.where(touched, num / xp.where(touched, den, 1.0), 0).astype(state.object.dtype)
        if update_probe:
            pnum = comm.allreduce_sum(pnum)
            pden = comm.allreduce_scalar(pden)
            state.probe += pnum / max(pden, _TINY)
        if options.gamma:
            state.background = (state.background * xp.exp(comm.allreduce_sum(log_b))).astype(state.background.dtype)
    if update_probe and op.na_mask is not None and it < options.na_mask_stop_iter:
        state.probe = apply_fourier_mask_2d(state.probe, op.na_mask)
    if options.normalise_scale:
        state = normalise_scale(state)
    norm = sum(float(xp.sum(xp.where(data.mask_at(j), data.intensities[j], 0.0))) for j in sorted(mine))
    norm = comm.allreduce_scalar(norm)
    total = comm.allreduce_scalar(total)
    state.iteration = it + 1
    return state, SweepStats(cost=total / max(norm, _TINY), probe_updated=update_probe)
