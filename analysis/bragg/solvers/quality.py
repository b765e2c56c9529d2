"""Data-side quality of a Bragg state: the R-factor over the measured entries
(docs/dataset-format.md, Quality of a run).
"""

from __future__ import annotations

from analysis.bragg.solvers.model import BraggData, BraggModel, BraggState
from analysis.xp import array_module, to_numpy

__all__ = ["R_FACTOR_POINTS_PER_PHASE", "r_factor_due", "r_factor_sums"]

R_FACTOR_POINTS_PER_PHASE = 20
"""About how many R-factors the engine records along each phase (:func:`r_factor_due`), the last at its end."""


def r_factor_sums(state: BraggState, data: BraggData, op: BraggModel) -> tuple[float, float]:
    """(Σ ω|√I − |Ψ̃||, Σ ω√I) over the entries ω of ``data`` (this process's positions).

    |Ψ̃| = √(|Ψ_j|² + b) is the model amplitude as the engine models it (far field Ψ_j = F(P_j ρ_j),
    incoherent background b, seed Eq 1; docs/geometry.md, Operators); R = first / second. Positions without a valid
    frame are skipped.
    """
    xp = array_module(state.object)
    num = den = xp.zeros((), dtype=xp.float64)            # summed on the device
    for j in range(data.n_positions):
        if not data.has_data(j):
            continue
        view = state.object[op.view(data.offsets_vox[j])]
        # Ψ_j, seed Eq 1; docs/geometry.md, Operators
        psi = op.fourier.forward(op.probe_at(state.probe, data.shifts_px[j]) * view)
        model = xp.sqrt(xp.maximum(psi.real ** 2 + psi.imag ** 2 + state.background, 0.0))
        meas = xp.sqrt(xp.maximum(data.intensities[j], 0.0))
        m = data.mask_at(j)
        num = num + xp.sum(xp.where(m, xp.abs(meas - model), 0.0), dtype=xp.float64)
        den = den + xp.sum(xp.where(m, meas, 0.0), dtype=xp.float64)
    num_h, den_h = to_numpy(xp.stack([num, den]))          # one host copy (one GPU synchronisation)
    return float(num_h), float(den_h)


def r_factor_due(n_done: int, n_phase: int, *, points: int = R_FACTOR_POINTS_PER_PHASE) -> bool:
    """Whether the engine records the R-factor after iteration ``n_done`` (1-based) of a phase of ``n_phase``.

    Every ⌈n_phase/points⌉-th iteration and the phase's last: about ``points`` values per phase, each one
    forward pass over the positions (:func:`r_factor_sums`), a few per cent of the phase's own cost.

    Parameters
    ----------
    n_done
        Iterations of the phase completed so far.
    n_phase
        Iterations the recipe gives the phase.
    points
        Values wanted per phase (>= 1).

    Returns
    -------
    bool
        True when an R-factor is due now.
    """
    if n_done < 1 or n_phase < 1:
        return False
    step = max(1, -(-n_phase // max(1, points)))
    return n_done >= n_phase or n_done % step == 0
