"""Phase vortices (dislocation cores) of a complex field: residues, circulation windows, n·atan2 phase
(docs/fp-dfxm.md, Model and conventions).

Used to seed the FP-DFXM start object (:mod:`analysis.dfxm.start`) and to read dislocations
off a reconstructed object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from analysis.xp import Array, to_numpy

__all__ = ["PhaseVortex", "find_phase_vortices", "vortex_phase_rad"]


@dataclass(frozen=True, kw_only=True)
class PhaseVortex:
    """A phase singularity of the Bragg exit field: a dislocation with G·b = 2π·winding
    (docs/fp-dfxm.md, Model and conventions).
    """

    row_px: float
    """Row of the core on the grid it was found on (pixel centres at integers)."""
    col_px: float
    """Column of the core."""
    winding: int
    """Winding number n of φ = n·atan2(row − row_px, col − col_px) around the core."""


def _box_sum(a: np.ndarray, width_px: int) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    return uniform_filter(a, width_px, mode="constant") * width_px * width_px


def _pick_vortices(circulation_rad: np.ndarray, allowed: np.ndarray, *, window_px: int,
                   min_turns: float, max_vortices: int = 64) -> tuple[PhaseVortex, ...]:
    """Vortices from a plaquette circulation map (ROW−1, COL−1): greedy peaks of its window sums.

    Stokes: ∮∇φ·dl around a loop is 2π × (net winding inside), so the circulation summed over a
    window of plaquettes counts the vortices in it even when the core itself is blurred.
    """
    circ = np.where(allowed, circulation_rad, 0.0)
    half = window_px // 2
    found: list[PhaseVortex] = []
    for _ in range(max_vortices):
        box = _box_sum(circ, window_px)
        k = np.unravel_index(int(np.argmax(np.abs(box))), box.shape)
        turns = float(box[k]) / (2 * math.pi)
        if abs(turns) < min_turns:
            break
        sl = (slice(max(k[0] - half, 0), min(k[0] + half + 1, circ.shape[0])),
              slice(max(k[1] - half, 0), min(k[1] + half + 1, circ.shape[1])))
        wgt = np.maximum(np.sign(turns) * circ[sl], 0.0)
        rr, cc = np.mgrid[sl]
        norm = float(wgt.sum()) or 1.0
        # plaquette (r, c) is centred at (r + ½, c + ½) of the pixel grid
        found.append(PhaseVortex(row_px=float((wgt * rr).sum() / norm) + 0.5,
                                 col_px=float((wgt * cc).sum() / norm) + 0.5, winding=int(round(turns))))
        circ[sl] = 0.0
    merged: list[PhaseVortex] = []                     # a core split into residues of both signs: one vortex
    for v in found:
        near = [m for m in merged if math.hypot(m.row_px - v.row_px, m.col_px - v.col_px) <= window_px]
        if near:
            m = near[0]
            merged[merged.index(m)] = PhaseVortex(row_px=m.row_px, col_px=m.col_px, winding=m.winding + v.winding)
        else:
            merged.append(v)
    return tuple(v for v in merged if v.winding != 0)


def _plaquette_circulation(d_row: np.ndarray, d_col: np.ndarray) -> np.ndarray:
    """∮ around each plaquette, path +col, +row, −col, −row; d_row (R−1, C), d_col (R, C−1) edge increments."""
    return d_col[:-1, :] + d_row[:, 1:] - d_col[1:, :] - d_row[:, :-1]


def _bright_plaquettes(weight: np.ndarray, *, fraction: float) -> np.ndarray:
    from scipy.ndimage import binary_fill_holes

    ok = binary_fill_holes(weight > fraction * float(np.percentile(weight, 99)))   # dark cores inside stay in
    return ok[:-1, :-1] & ok[1:, :-1] & ok[:-1, 1:] & ok[1:, 1:]


def find_phase_vortices(obj: Array, *, window_px: int = 9, amplitude_fraction: float = 0.2) -> tuple[PhaseVortex, ...]:
    """Phase vortices (dislocation cores, docs/fp-dfxm.md, Model and conventions) of a complex field
    (ROW, COL) from its phase residues.

    Each plaquette's sum of wrapped phase differences is 2π × an integer (a residue); residues are
    summed over ``window_px`` windows (noise dipoles cancel) inside the region where the amplitude
    exceeds ``amplitude_fraction`` of its 99th percentile, holes (dark cores) filled; the dark exterior is excluded.
    """
    o = np.asarray(to_numpy(obj))
    if o.ndim != 2 or not np.all(np.isfinite(o)):
        raise ValueError(f"find_phase_vortices: expected a finite 2D complex array, got shape {o.shape}")
    if not isinstance(window_px, int) or window_px < 3:
        raise ValueError(f"find_phase_vortices: window_px must be an int >= 3, got {window_px!r}")
    d_row = np.angle(o[1:, :] * np.conj(o[:-1, :]))
    d_col = np.angle(o[:, 1:] * np.conj(o[:, :-1]))
    allowed = _bright_plaquettes(np.abs(o), fraction=amplitude_fraction)
    return _pick_vortices(_plaquette_circulation(d_row, d_col), allowed, window_px=window_px, min_turns=0.5)


def vortex_phase_rad(shape: tuple[int, int], vortices: tuple[PhaseVortex, ...], *, scale: float = 1.0,
                     xp: ModuleType = np) -> Array:
    """Σ n·atan2(row − s·row_px, col − s·col_px) on a (ROW, COL) grid ``scale`` times finer."""
    rows = xp.arange(shape[0], dtype=float)[:, None]
    cols = xp.arange(shape[1], dtype=float)[None, :]
    phase = xp.zeros(shape)
    for v in vortices:
        phase = phase + v.winding * xp.arctan2(rows - scale * v.row_px, cols - scale * v.col_px)
    return phase
