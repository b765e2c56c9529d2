"""Held-out ("free") data cross-validation of the Bragg reconstruction.

A random set of measured entries is kept out of every update: the ePIE modulus constraint
treats them like masked pixels (seed Eq 13, ω = 0: Ψ left free, b not updated there) and the
ML cost drops them (they are simply not in the work data's ω). The amplitude cost of seed Eq 4
(data term, Σ(√(|Ψ|² + b) − √I)²) on the held-out entries, per entry, is the free cost; the
same sum on the fitted ("work") entries in the same pass is the work cost. Analogues: R_free in
crystallography (Brünger, Nature 355, 472 (1992)) and the free log-likelihood of PyNX's CDI.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from analysis.bragg.solvers.distributed import Communicator, SerialCommunicator
from analysis.bragg.solvers.model import BraggData, BraggModel, BraggState
from analysis.bragg.solvers.options import FreeDataOptions
from analysis.xp import Array, array_module

__all__ = ["held_out_rows", "split_data", "amplitude_costs", "FreeCostHistory", "FreeDataMonitor"]

_TINY = 1e-30


def held_out_rows(global_index: np.ndarray, shape: tuple[int, int, int], options: FreeDataOptions) -> np.ndarray:
    """Held-out selection of the positions ``global_index``, in the solvers' layout.

    ``shape`` is the measured field (N1, N2, NM). Returns (POS, N1, N2, NM) bool for
    ``unit='entry'`` or (POS, NM) bool for ``unit='frame'``; each position draws from
    ``default_rng((seed, global index))``, so the set is independent of ranks and arrival order.
    """
    n1, n2, nm = (int(v) for v in shape)
    per_pos = (n1, n2, nm) if options.unit == "entry" else (nm,)
    out = np.zeros((len(global_index),) + per_pos, dtype=bool)
    for row, g in enumerate(np.asarray(global_index, dtype=np.int64)):
        out[row] = np.random.default_rng((int(options.seed), int(g))).random(per_pos) < options.fraction
    return out


def _as_entries(valid: Array, shape: tuple[int, ...]) -> Array:
    """(POS, NM) frame validity broadcast to (POS, N1, N2, NM); 4-D passes unchanged."""
    xp = array_module(valid)
    if valid.ndim == 4:
        return valid
    return xp.broadcast_to(valid[:, None, None, :], shape)


def split_data(data: BraggData, held_out: Array | None) -> tuple[BraggData, BraggData | None]:
    """(work, free): ``data`` with the ``held_out`` entries removed from its ω, and with only those.

    ``held_out`` as from :func:`held_out_rows` (device array or NumPy), None → (data, None). Both
    share ``data.intensities``; only ``frame_valid`` differs (the detector mask still applies).
    """
    if held_out is None:
        return data, None
    xp = array_module(data.intensities)
    held = xp.asarray(held_out)
    valid = data.frame_valid
    if valid is None:
        valid = xp.ones(held.shape, dtype=bool)
    if valid.ndim != held.ndim:
        shape = tuple(data.intensities.shape)
        valid, held = _as_entries(valid, shape), _as_entries(held, shape)
    work = dataclasses.replace(data, frame_valid=xp.ascontiguousarray(valid & ~held))
    free = dataclasses.replace(data, frame_valid=xp.ascontiguousarray(valid & held))
    return work, free


def amplitude_costs(state: BraggState, work: BraggData, free: BraggData, op: BraggModel,
                    comm: Communicator | None = None) -> tuple[float, int, float, int]:
    """(Σ_work, N_work, Σ_free, N_free): seed Eq 4's data term Σ ω (√(|Ψ_j|² + b) − √I_j)² on the
    work and on the held-out entries, with their entry counts, from one forward pass (summed over
    ranks with ``comm``).
    """
    xp = array_module(state.object)
    sums = np.zeros(4)
    for j in range(work.n_positions):
        if not (work.has_data(j) or free.has_data(j)):
            continue
        view = state.object[op.view(work.offsets_vox[j])]
        # Ψ_j, seed Eq 1; docs/geometry.md, Operators
        psi = op.fourier.forward(op.probe_at(state.probe, work.shifts_px[j]) * view)
        d = xp.sqrt(xp.maximum(psi.real ** 2 + psi.imag ** 2 + state.background, _TINY)) - xp.sqrt(work.intensities[j])
        d *= d
        m_work, m_free = work.mask_at(j), free.mask_at(j)
        sums += (float(xp.sum(xp.where(m_work, d, 0.0), dtype=xp.float64)), float(xp.count_nonzero(m_work)),
                 float(xp.sum(xp.where(m_free, d, 0.0), dtype=xp.float64)), float(xp.count_nonzero(m_free)))
    c = SerialCommunicator() if comm is None else comm
    s_work, n_work, s_free, n_free = (c.allreduce_scalar(float(v)) for v in sums)
    return s_work, int(round(n_work)), s_free, int(round(n_free))


@dataclass(frozen=True, kw_only=True)
class FreeCostHistory:
    """Free (held-out) and work costs at the checks of one reconstruction."""

    fraction: float
    """Requested held-out fraction."""
    unit: str
    """'entry' or 'frame'."""
    n_free_entries: int
    """Held-out measured entries (ω = 1) at the last check."""
    n_work_entries: int
    """Fitted measured entries at the last check."""
    iterations: tuple[int, ...]
    """Completed iterations at each check."""
    phases: tuple[str, ...]
    """'epie' or 'ml' per check (the phase of the iteration just run; 'ml' for the ML-start baseline)."""
    free_costs: tuple[float, ...]
    """Σ_free (√h − √I)² / N_free per check (photons per held-out entry)."""
    work_costs: tuple[float, ...]
    """Σ_work (√h − √I)² / N_work per check, same state (photons per fitted entry)."""
    best_iteration: int | None
    """Iteration of the lowest free cost (None before the first check)."""
    best_free_cost: float
    """The lowest free cost (inf before the first check)."""
    stopped_phases: tuple[str, ...]
    """Phases ended early by the patience rule."""
    restored_phases: tuple[str, ...]
    """Phases at whose end the best state was restored."""


@dataclass(kw_only=True)
class _Snapshot:
    object: Array
    probe: Array
    background: Array
    support: Array
    iteration: int


class FreeDataMonitor:
    """Evaluates the free cost every ``check_interval`` iterations, keeps the best state, applies
    the patience rule (one instance per reconstruction; no shared state).
    """

    def __init__(self, options: FreeDataOptions, comm: Communicator | None = None) -> None:
        self.options = options
        self._comm = comm
        self._iterations: list[int] = []
        self._phases: list[str] = []
        self._free: list[float] = []
        self._work: list[float] = []
        self._counts = (0, 0)
        self._best_cost = float("inf")
        self._best: _Snapshot | None = None
        self._best_iteration: int | None = None
        self._since_best = 0
        self._stopped: list[str] = []
        self._restored: list[str] = []

    @property
    def epie_stopped(self) -> bool:
        """Whether the patience rule ended the ePIE phase."""
        return "epie" in self._stopped

    @property
    def finished(self) -> bool:
        """Whether the patience rule ended the ML phase (the recipe is done)."""
        return "ml" in self._stopped

    @property
    def has_checks(self) -> bool:
        """Whether the free cost was evaluated at least once."""
        return bool(self._iterations)

    def evaluate(self, state: BraggState, work: BraggData, free: BraggData, op: BraggModel, phase: str) -> float:
        """Record the free and work costs of ``state``; keep it if it is the best so far. Returns the free cost."""
        s_work, n_work, s_free, n_free = amplitude_costs(state, work, free, op, self._comm)
        f = s_free / n_free if n_free else float("nan")
        self._iterations.append(int(state.iteration))
        self._phases.append(phase)
        self._free.append(f)
        self._work.append(s_work / n_work if n_work else float("nan"))
        self._counts = (n_free, n_work)
        if f < self._best_cost:
            self._best_cost, self._best_iteration, self._since_best = f, int(state.iteration), 0
            if self.options.restore_best:
                self._best = _Snapshot(object=state.object.copy(), probe=state.probe.copy(),
                                       background=state.background.copy(), support=state.support.copy(),
                                       iteration=int(state.iteration))
        else:
            self._since_best += 1
        return f

    def after_iteration(self, state: BraggState, work: BraggData, free: BraggData, op: BraggModel, *, phase: str,
                        n_done: int, n_phase: int) -> BraggState:
        """Check after the ``n_done``-th iteration of ``phase`` (of ``n_phase`` in the recipe).

        At a check, the patience rule may stop the phase; at a stop or at the phase's last
        iteration, the best state is restored (``restore_best``) and the patience count restarts.
        """
        o = self.options
        last = n_done == n_phase
        if n_done % o.check_interval and not last:
            return state
        self.evaluate(state, work, free, op, phase)
        stop = o.patience is not None and phase in o.stop_phases and self._since_best >= o.patience and not last
        if stop:
            self._stopped.append(phase)
        if stop or last:
            self._since_best = 0
            if o.restore_best and self._best is not None and self._best.iteration != state.iteration:
                state = self.restore(state)
                self._restored.append(phase)
        return state

    def restore(self, state: BraggState) -> BraggState:
        """``state`` with ρ, P2, b and S of the best check (copies; the CG memory is dropped)."""
        b = self._best
        if b is None:
            return state
        state.object, state.probe = b.object.copy(), b.probe.copy()
        state.background, state.support = b.background.copy(), b.support.copy()
        state.ml_memory = None
        return state

    def history(self) -> FreeCostHistory:
        """The checks so far."""
        o = self.options
        return FreeCostHistory(fraction=o.fraction, unit=o.unit, n_free_entries=self._counts[0],
                               n_work_entries=self._counts[1], iterations=tuple(self._iterations),
                               phases=tuple(self._phases), free_costs=tuple(self._free),
                               work_costs=tuple(self._work), best_iteration=self._best_iteration,
                               best_free_cost=self._best_cost, stopped_phases=tuple(self._stopped),
                               restored_phases=tuple(self._restored))
