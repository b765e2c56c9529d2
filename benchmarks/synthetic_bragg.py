"""Synthetic Bragg frames for the timing benchmarks (timing does not depend on their content).

A uniform object under a Gaussian probe section, through the engine's own operators, and the
Reconstruction the timing scripts run on it (0.5 µm slab support, probe updated from sweep 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.bragg.engine import EpieOptions, MLOptions, Recipe, Reconstruction, SupportSchedule
from analysis.bragg.operators import view_grid
from analysis.bragg.solvers.model import BraggModel
from analysis.bragg.solvers.options import Execution
from analysis.geometry import BraggGeometry
from analysis.xp import to_numpy


def synthetic_frames(g: BraggGeometry, stage_xyz_m: np.ndarray, probe_sigma_px: tuple[float, float],
                     xp: Any = np) -> tuple[np.ndarray, np.ndarray]:
    """(frames (POS, ANGLE, N1, N2) float32, probe P2 (N2, N3) complex64) for ``g`` and the positions.

    ``xp``: the backend the transforms run on (CuPy makes the seed-size frames in seconds); the
    results are NumPy arrays either way.
    """
    n2, n3 = g.recon_shape[1:]
    b = (np.arange(n2) - n2 // 2)[:, None]
    c = (np.arange(n3) - n3 // 2)[None, :]
    probe = np.exp(-(b / probe_sigma_px[0]) ** 2 - (c / probe_sigma_px[1]) ** 2).astype(np.complex64)
    vg = view_grid(g, stage_xyz_m, margin_vox=2)
    op = BraggModel.from_geometry(g, vg.object_shape)
    obj = xp.ones(vg.object_shape, np.complex64)
    p2 = xp.asarray(probe)
    frames = np.empty((stage_xyz_m.shape[0], g.n_angles, g.n_rows_px, g.n_cols_px), np.float32)
    for j in range(stage_xyz_m.shape[0]):
        psi = op.fourier.forward(op.probe_at(p2, vg.shifts_px[j]) * obj[op.view(vg.offsets_vox[j])])
        frames[j] = to_numpy(xp.moveaxis(psi.real ** 2 + psi.imag ** 2, -1, 0))
    return frames, probe


def timing_reconstruction(g: BraggGeometry, frames: np.ndarray, stage_xyz_m: np.ndarray, probe: np.ndarray, *,
                          n_epie: int, n_ml: int = 0, epie: EpieOptions | None = None,
                          ml: MLOptions | None = None, xp: Any = np,
                          execution: Execution | None = None) -> Reconstruction:
    """The Reconstruction the timing scripts iterate (all pixels valid, 0.5 µm slab, no shrink-wrap);
    ``execution``: how it runs (default :class:`~analysis.bragg.solvers.options.Execution`).
    """
    epie = EpieOptions(probe_update_start_iter=0) if epie is None else epie
    recipe = Recipe(n_epie_iterations=n_epie, n_ml_iterations=n_ml, epie=epie, ml=MLOptions() if ml is None else ml,
                    support=SupportSchedule(thickness_schedule_m=((0, 0.5e-6),), shrinkwrap_start_iter=None))
    return Reconstruction(g, frames, np.ones((g.n_rows_px, g.n_cols_px), bool), stage_xyz_m,
                          (np.arange(g.n_angles) - g.n_angles // 2) * g.rocking_step_deg, probe, recipe=recipe,
                          probe_width_m=1e-6, xp=xp, execution=execution)
