"""CPU benchmark of the reconstruction engine: seconds per ePIE sweep and peak memory (issue 3).

Problem: 11 positions × 40 angles × 256² frames, seed geometry with U = 1 (Δθ = 0.005°).
Frames are synthetic (a uniform slab under a Gaussian probe through the engine's own
operators; timing does not depend on their content). Targets: ≤ 0.8 s per sweep on 2
cores, ≤ 1 GB peak. Run: ``.venv/bin/python benchmarks/bench_engine_cpu.py [n_sweeps [FFTW_ESTIMATE|FFTW_MEASURE|FFTW_PATIENT]]``;
``PXM_CPU_KERNELS=0`` times the plain array code instead of the fused CPU kernels.
"""

from __future__ import annotations

import resource
import sys

import numpy as np

from analysis.engine import EpieOptions, Recipe, Reconstruction, SupportSchedule
from analysis.geometry import seed_geometry
from analysis.operators import view_grid
from analysis.solvers.model import BraggModel
from analysis.xp import cpu_kernels


def main(n_sweeps: int = 3, fftw_effort: str = "FFTW_MEASURE") -> dict[str, float]:
    """Run ``n_sweeps`` ePIE sweeps (probe updated) and return timing and memory numbers."""
    g = seed_geometry(upsampling=1, n_angles=40, n_rows_px=256, n_cols_px=256)
    xs = (np.arange(11) - 5) * 0.1e-6
    stage = np.stack([xs, 0.3 * xs, np.zeros(11)], axis=1)
    n2, n3 = g.recon_shape[1:]
    b = (np.arange(n2) - n2 // 2)[:, None]
    c = (np.arange(n3) - n3 // 2)[None, :]
    probe = np.exp(-(b / 8.0) ** 2 - (c / 6.0) ** 2).astype(np.complex64)
    vg = view_grid(g, stage, margin_vox=2)
    op = BraggModel.from_geometry(g, vg.object_shape)
    obj = np.ones(vg.object_shape, np.complex64)
    frames = np.empty((11, g.n_angles, g.n_rows_px, g.n_cols_px), np.float32)
    for j in range(11):
        psi = op.fourier.forward(op.probe_at(probe, vg.shifts_px[j]) * obj[op.view(vg.offsets_vox[j])])
        frames[j] = np.moveaxis(np.abs(psi) ** 2, -1, 0)
    del obj, op
    sched = SupportSchedule(thickness_schedule_m=((0, 0.5e-6),), shrinkwrap_start_iter=10 ** 6)
    recipe = Recipe(n_epie_iterations=n_sweeps + 1, n_ml_iterations=0, support=sched,
                    epie=EpieOptions(probe_update_start_iter=0, fftw_effort=fftw_effort))
    rec = Reconstruction(g, frames, np.ones((g.n_rows_px, g.n_cols_px), bool), stage,
                         (np.arange(g.n_angles) - g.n_angles // 2) * g.rocking_step_deg, probe, recipe=recipe,
                         probe_width_m=1e-6)
    rec.iterate(1)                                   # warm-up (FFTW plans, Numba cache load)
    rec.iterate(n_sweeps)
    times = np.asarray(rec.result().timings_s[1:])
    first_s = rec.result().timings_s[0]
    per_sweep = float(np.median(times))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9   # Linux: KiB
    out = {"box_voxels": float(np.prod(g.recon_shape)), "object_voxels": float(np.prod(vg.object_shape)),
           "s_per_sweep": per_sweep, "s_per_sweep_min": float(times.min()), "peak_rss_gb": peak_gb,
           "first_sweep_s": float(first_s)}
    path = "fused CPU" if recipe.epie.cpu_fused and cpu_kernels() is not None else "array code"
    print(f"box {g.recon_shape}, object {vg.object_shape} ({path}): {per_sweep:.2f} s per sweep median "
          f"(min {times.min():.2f} s, {n_sweeps} sweeps, 11 positions; first sweep with plans {first_s:.2f} s), "
          f"peak RSS {peak_gb:.2f} GB")
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3, *(sys.argv[2:3]))
