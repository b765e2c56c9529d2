"""The seed's full-size problem on CPU (issue 5): seconds per ePIE sweep and per ML iteration.

400 positions (20 × 20 raster, 100 nm steps as the seed's Fig. 2 scan) × 42 angles, U = 3,
200 × 160 frames, seed geometry: box 294 × 160 × 126. Frames are synthetic (a uniform 0.5 µm
slab under a Gaussian probe, through the engine's own operators; timing does not depend on their
content). Measures what a workstation must do for the seed's 1000 + 500 schedule; the total is
extrapolated, not run. Run: ``.venv/bin/python benchmarks/bench_seed_size_cpu.py [n_sweeps n_ml [smoothness]]``
(``smoothness``: ``MLOptions.smoothness`` of the ML iterations, default 0).
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np
from synthetic_bragg import synthetic_frames, timing_reconstruction

from analysis.bragg.engine import MLOptions
from analysis.geometry import seed_geometry
from analysis.xp import cpu_kernels


def main(n_sweeps: int = 2, n_ml: int = 1, smoothness: float = 0.0) -> dict[str, float]:
    """Time ``n_sweeps`` ePIE sweeps (after one warm-up sweep) and ``n_ml`` ML iterations.

    The first ML iteration also computes μ_j, the μ map and Ψ0 (later ones take Ψ0 from the
    previous Armijo trial) and plans the fused path's ΔP box: with ``n_ml`` > 1 the figure per
    iteration is the median of the later ones.
    """
    g = seed_geometry()
    xs = (np.arange(20) - 9.5) * 0.1e-6
    sx, sy = np.meshgrid(xs, xs, indexing="ij")
    stage = np.stack([sx.ravel(), sy.ravel(), np.zeros(sx.size)], axis=1)
    n_pos = stage.shape[0]
    t0 = time.perf_counter()
    frames, probe = synthetic_frames(g, stage, (8.0, 18.0))
    t_frames = time.perf_counter() - t0
    rec = timing_reconstruction(g, frames, stage, probe, n_epie=n_sweeps + 1, n_ml=n_ml,
                                ml=MLOptions(smoothness=smoothness))
    recipe = rec.recipe
    rec.iterate(recipe.n_iterations)
    res = rec.result()
    t_epie = np.asarray(res.timings_s[1:n_sweeps + 1])
    t_ml = np.asarray(res.timings_s[n_sweeps + 1:])
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    sweep_s = float(np.median(t_epie))
    ml_s = float(np.median(t_ml[1:] if n_ml > 1 else t_ml)) if n_ml else float("nan")
    total_h = (1000 * sweep_s + 500 * ml_s) / 3600
    path = "fused CPU" if cpu_kernels() is not None and rec.execution.cpu_kernels else "array code"
    ml_path = path                                   # one Execution value picks the kernels of both phases
    print(f"seed size: {n_pos} positions × {g.n_angles} angles × {g.n_rows_px}×{g.n_cols_px}, U = {g.upsampling}, "
          f"box {g.recon_shape}, object {rec.op.object_shape}; frames synthesised in {t_frames:.0f} s")
    print(f"ePIE ({path}): first sweep (plans) {res.timings_s[0]:.1f} s, then {sweep_s:.1f} s per sweep "
          f"({', '.join(f'{t:.1f}' for t in t_epie)}); ML ({ml_path}, smoothness {smoothness}): "
          f"{ml_s:.1f} s per iteration "
          f"({', '.join(f'{t:.1f}' for t in t_ml)}); load {open('/proc/loadavg').read().split()[:3]}; "
          f"peak RSS {peak_gb:.2f} GB; seed schedule 1000 + 500 extrapolated: {total_h:.1f} h on this machine")
    return {"s_per_sweep": sweep_s, "s_per_ml": ml_s, "peak_rss_gb": peak_gb, "schedule_h": total_h}


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]), *(float(a) for a in sys.argv[3:4]))
