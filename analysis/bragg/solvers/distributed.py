"""Positions split across ranks: mini-batch / full-batch rPIE with all-reduced sums (docs/mpi.md).

Each rank owns the positions j ≡ rank (mod size), holds only their frames, and adds its share
of the batch sums of docs/mpi.md:

    ρ ← ρ + Σ_{j∈B}[P_j*Δψ_j − μ_j S̄ρ] / Σ_{j∈B}[(1−β)|P_j|² + βP_{j,max} + μ_j S̄]     (seed Eqs 5, 7, 9)
    P2 ← P2 + Σ_{j∈B} m_j R(ρ_j*Δψ_j / λ_j) / Σ_{j∈B} m_j,  m_j = max|ρ_j|²,
         λ_j = (1−α)|ρ_j|² + α m_j                                                    (Eqs 6, 8, 10)
    b ← b Π_{j∈B} ((1−γ) + γ√(I_j/h_j))²  on ω_j = 1                                   (Eq 11, b fixed in a batch)

The probe step is the m_j-weighted mean of the per-position steps of Eq 6: with α = 1 it is
Σ R(ρ_j*Δψ_j) / Σ max|ρ_j|² (the summed form of docs/mpi.md), and with one position per batch
it is Eq 6 itself. The sums are all-reduced, so every rank holds the same ρ, P2 and b after each
batch (as in ptypy's MPI engines and the seed's 4-GPU run). ``n_batches = 0 or 1`` is the
full-batch variant (C). Results do not depend on the number of ranks beyond floating-point
summation order; the 1-rank reference is this same function with :class:`SerialCommunicator`
(not the sequential ePIE of :mod:`analysis.bragg.solvers.epie`, which is inherently serial).
The :class:`Communicator` interface hides MPI: :class:`SerialCommunicator` for one process,
:func:`mpi_communicator` for ``mpi4py`` (host buffers; CuPy arrays are staged through NumPy).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from analysis.bragg.operators.probe import apply_fourier_mask_2d
from analysis.bragg.solvers.epie import SweepStats, modulus_update, spread_batches
from analysis.bragg.solvers.model import BraggData, BraggModel, BraggState, normalise_scale
from analysis.bragg.solvers.options import EpieOptions
from analysis.xp import Array, array_module, to_numpy

_TINY = 1e-30


class Communicator(Protocol):
    """The reductions the distributed solver needs (a subset of MPI's)."""

    @property
    def rank(self) -> int:
        """Rank of the calling process, 0 … size − 1."""
        ...

    @property
    def size(self) -> int:
        """Number of ranks."""
        ...

    def allreduce_sum(self, a: Array) -> Array:
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

    def allreduce_sum(self, a: Array) -> Array:
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

    def allreduce_sum(self, a: Array) -> Array:
        """Sum over ranks; CuPy arrays go through host memory (no CUDA-aware MPI assumed)."""
        if self.size == 1:
            return a
        xp = array_module(a)
        buf = np.ascontiguousarray(to_numpy(a))
        self._comm.Allreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)
        return xp.asarray(buf)

    def allreduce_scalar(self, x: float) -> float:
        """Sum of a float over ranks, added in rank order: bit-identical on every rank (the ML line
        search and the restart test branch on these sums, so all ranks must take the same branch).
        """
        if self.size == 1:
            return float(x)
        return math.fsum(float(v) for v in self._comm.allgather(float(x)))


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
    if n_positions < 0 or not 0 <= comm.rank < comm.size:
        raise ValueError(f"owned_positions: n_positions = {n_positions}, rank {comm.rank} of {comm.size}")
    return np.arange(comm.rank, n_positions, comm.size, dtype=np.int64)


@dataclass(frozen=True, kw_only=True)
class ScanShare:
    """Which positions of the whole scan the rows of this rank's :class:`BraggData` are."""

    global_index: np.ndarray = field(repr=False)
    """(POS_LOCAL,) int64, increasing: global position index of each local data row."""
    batch_coords_vox: np.ndarray = field(repr=False)
    """(POS, 3) float: o_j + (0, g_j) of every position of the scan, in voxels (identical on all
    ranks; the batches are drawn from these)."""

    def __post_init__(self) -> None:
        gi = np.asarray(self.global_index)
        n = int(np.shape(self.batch_coords_vox)[0])
        if gi.ndim != 1 or (gi.size and (gi.min() < 0 or gi.max() >= n or np.any(np.diff(gi) <= 0))):
            raise ValueError(f"ScanShare.global_index: expected increasing indices in [0, {n}), got {gi[:5]}...")

    @property
    def n_positions(self) -> int:
        """Positions of the whole scan."""
        return int(np.shape(self.batch_coords_vox)[0])


def batch_coords_vox(offsets_vox: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
    """(POS, 3) o_j + (0, g_j): the coordinates :func:`analysis.bragg.solvers.epie.spread_batches` spreads."""
    return np.asarray(offsets_vox, float) + np.pad(np.asarray(shifts_px, float), ((0, 0), (1, 0)))


def whole_scan_share(data: BraggData, comm: Communicator) -> ScanShare:
    """Share of a rank whose ``data`` holds every position: the rows :func:`owned_positions` names."""
    return ScanShare(global_index=owned_positions(data.n_positions, comm),
                     batch_coords_vox=batch_coords_vox(data.offsets_vox, data.shifts_px))


def _probe_terms(op: BraggModel, v: Array, dpsi: Array, shift: np.ndarray, alpha: float) -> tuple[Array, Array]:
    """(m_j R(ρ_j*Δψ_j/λ_j), m_j) of Eqs 6, 8, 10; α = 1 applies R before the (scalar) division."""
    xp = array_module(v)
    v2 = v.real ** 2 + v.imag ** 2
    vmax = xp.max(v2)                                                                # 0-d, on the device
    grad = xp.conj(v) * dpsi                                                         # Eq 8
    if alpha == 1.0:
        return op.probe_adjoint(grad, shift) / op.box_shape[0], vmax                 # m_j R(g/m_j) = R(g)
    lam = (1.0 - alpha) * v2 + alpha * vmax                                          # Eq 10
    return op.probe_adjoint(grad / xp.maximum(lam, _TINY), shift) * (vmax / op.box_shape[0]), vmax


def step(state: BraggState, data: BraggData, *, op: BraggModel, options: EpieOptions,
         comm: Communicator = SerialCommunicator(), rng: np.random.Generator | None = None,
         share: ScanShare | None = None) -> tuple[BraggState, SweepStats]:
    """One sweep of the batched update of docs/mpi.md with sums all-reduced over ranks.

    ``options.n_batches`` spatially spread batches (0 or 1: one full batch). ``rng`` must be
    seeded identically on every rank (it draws the batches and their order). ``share`` names the
    global positions of ``data``'s rows (this rank's frames only); None: ``data`` holds every
    position and the rank processes those of :func:`owned_positions`.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    share = whole_scan_share(data, comm) if share is None else share
    if data.n_positions == share.n_positions:                   # data holds every position
        row = {int(g): int(g) for g in share.global_index}
    elif data.n_positions == share.global_index.size:           # data holds this rank's rows only
        row = {int(g): k for k, g in enumerate(share.global_index)}
    else:
        raise ValueError(f"distributed.step: data has {data.n_positions} rows but the share names "
                         f"{share.global_index.size} of {share.n_positions} positions")
    xp = array_module(state.object)
    it = state.iteration
    update_probe = options.update_probe and it >= options.probe_update_start_iter
    batches = spread_batches(share.batch_coords_vox, max(1, options.n_batches), rng)
    rdt = state.object.real.dtype
    total: float | Array = 0.0                     # misfits are 0-d device arrays: no host sync per position
    for bi in rng.permutation(len(batches)):
        num = xp.zeros_like(state.object)
        den = xp.zeros(state.object.shape, dtype=rdt)
        pnum = xp.zeros_like(state.probe)
        log_b = xp.zeros(state.background.shape, dtype=rdt)
        pden: Array | float = 0.0
        for g in batches[bi]:
            j = row.get(int(g))
            if j is None or not data.has_data(j):
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
            pmax = xp.max(p2abs)                                                     # 0-d, on the device
            mu_j = options.mu * pmax
            musbar = xp.where(state.support[sl], 0.0, mu_j).astype(rdt)
            num[sl] += xp.conj(pj) * dpsi - musbar * v
            den[sl] += (1.0 - options.beta) * p2abs + options.beta * pmax + musbar
            if update_probe:
                pn, m_j = _probe_terms(op, v, dpsi, data.shifts_px[j], options.alpha)
                pnum += pn
                pden += m_j
        num = comm.allreduce_sum(num)
        den = comm.allreduce_sum(den)
        touched = den > 0
        state.object += xp.where(touched, num / xp.where(touched, den, 1.0), 0).astype(state.object.dtype)
        if update_probe:
            pnum = comm.allreduce_sum(pnum)
            pden = comm.allreduce_scalar(float(pden))
            state.probe += pnum / max(pden, _TINY)
        if options.gamma:
            state.background = (state.background * xp.exp(comm.allreduce_sum(log_b))).astype(state.background.dtype)
    if update_probe and op.na_mask is not None and it < options.na_mask_stop_iter:
        state.probe = apply_fourier_mask_2d(state.probe, op.na_mask)
    if options.normalise_scale:
        state = normalise_scale(state)
    norm = sum(xp.sum(xp.where(data.mask_at(j), data.intensities[j], 0.0), dtype=xp.float64)
               for j in sorted(row.values()))
    norm = comm.allreduce_scalar(float(norm))
    total = comm.allreduce_scalar(float(total))
    state.iteration = it + 1
    return state, SweepStats(cost=total / max(norm, _TINY), probe_updated=update_probe)
