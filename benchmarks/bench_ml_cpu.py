"""CPU timing of an ePIE sweep and an ML iteration at two sizes (issue 5): seconds and peak RSS.

Cases: ``engine`` = 11 positions × 40 angles × 256², U = 1 (as ``bench_engine_cpu.py``);
``mid`` = 25 positions (5 × 5, 100 nm) × 42 angles × 100 × 80, U = 3 (seed geometry, frames
halved). Frames are synthetic (timing does not depend on their content). Thread scaling: run with
``PXM_FFT_WORKERS=1 NUMBA_NUM_THREADS=1`` and with 2. ``PXM_CPU_KERNELS=0`` times the array code.
Also prints the process CPU time (all threads) per iteration: on a shared machine where the wall
time cannot show the thread scaling, CPU time ≈ wall time × threads means the threads ran in parallel.
Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_ml_cpu.py [engine|mid] [n_sweeps n_ml [smoothness]]``.
"""

from __future__ import annotations

import os
import resource
import sys
import time

import numpy as np
from synthetic_bragg import synthetic_frames, timing_reconstruction

from analysis.bragg.engine import MLOptions
from analysis.geometry import seed_geometry
from analysis.xp import cpu_kernels


def _case(name: str) -> tuple:
    if name == "engine":
        g = seed_geometry(upsampling=1, n_angles=40, n_rows_px=256, n_cols_px=256)
        xs = (np.arange(11) - 5) * 0.1e-6
        return g, np.stack([xs, 0.3 * xs, np.zeros(11)], axis=1), (8.0, 6.0)
    if name == "mid":
        g = seed_geometry(n_rows_px=100, n_cols_px=80)
        xs = (np.arange(5) - 2) * 0.1e-6
        sx, sy = np.meshgrid(xs, xs, indexing="ij")
        return g, np.stack([sx.ravel(), sy.ravel(), np.zeros(sx.size)], axis=1), (4.0, 9.0)
    raise ValueError(f"unknown case {name!r}: engine or mid")


def main(case: str = "mid", n_sweeps: int = 2, n_ml: int = 3, smoothness: float = 0.0) -> dict[str, float]:
    """Time ``n_sweeps`` ePIE sweeps and ``n_ml`` ML iterations (each after one warm-up), ML with the
    smoothness prior of strength ``smoothness`` (0: the seed's cost).
    """
    g, stage, sigma_px = _case(case)
    frames, probe = synthetic_frames(g, stage, sigma_px)
    rec = timing_reconstruction(g, frames, stage, probe, n_epie=n_sweeps + 1, n_ml=n_ml + 1,
                                ml=MLOptions(smoothness=smoothness))
    cpu = []                                         # process CPU seconds (all threads) per iteration
    for _ in range(rec.recipe.n_iterations):
        c0 = time.process_time()
        rec.iterate(1)
        cpu.append(time.process_time() - c0)
    t = np.asarray(rec.result().timings_s)
    sweep_s = float(np.median(t[1:n_sweeps + 1]))
    ml_s = float(np.median(t[n_sweeps + 2:]))
    sweep_cpu_s, ml_cpu_s = float(np.median(cpu[1:n_sweeps + 1])), float(np.median(cpu[n_sweeps + 2:]))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    threads = (os.environ.get("PXM_FFT_WORKERS", "all"), os.environ.get("NUMBA_NUM_THREADS", "all"))
    path = "fused CPU" if cpu_kernels() is not None else "array code"
    print(f"{case}: {stage.shape[0]} positions × {g.n_angles} angles × {g.n_rows_px}×{g.n_cols_px}, "
          f"U = {g.upsampling}, box {g.recon_shape} ({path}, FFT/Numba threads {threads[0]}/{threads[1]}, "
          f"ML smoothness {smoothness:g}): ePIE {sweep_s:.2f} s per sweep "
          f"({', '.join(f'{v:.2f}' for v in t[1:n_sweeps + 1])}), ML {ml_s:.2f} s per iteration "
          f"(first {t[n_sweeps + 1]:.2f}; {', '.join(f'{v:.2f}' for v in t[n_sweeps + 2:])}); "
          f"CPU time {sweep_cpu_s:.2f} s per "
          f"sweep, {ml_cpu_s:.2f} s per ML iteration; peak RSS {peak_gb:.2f} GB; "
          f"load {open('/proc/loadavg').read().split()[:3]}")
    return {"s_per_sweep": sweep_s, "s_per_ml": ml_s, "cpu_s_per_sweep": sweep_cpu_s, "cpu_s_per_ml": ml_cpu_s,
            "peak_rss_gb": peak_gb}


if __name__ == "__main__":
    main(*(sys.argv[1:2]), *(int(a) for a in sys.argv[2:4]), *(float(a) for a in sys.argv[4:5]))
