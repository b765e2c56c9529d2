"""CPU benchmark of the reconstruction engine: seconds per ePIE sweep and peak memory (issue 3).

Problem: 11 positions × 40 angles × 256² frames, seed geometry with U = 1 (Δθ = 0.005°).
Frames are synthetic (a uniform slab under a Gaussian probe through the engine's own
operators; timing does not depend on their content). Targets: ≤ 0.8 s per sweep on 2
cores, ≤ 1 GB peak. Run:
``.venv/bin/python benchmarks/bench_engine_cpu.py [n_sweeps [FFTW_ESTIMATE|FFTW_MEASURE|FFTW_PATIENT]]``;
``PXM_CPU_KERNELS=0`` times the plain array code instead of the fused CPU kernels.
"""

from __future__ import annotations

import resource
import sys

import numpy as np
from synthetic_bragg import synthetic_frames, timing_reconstruction

from analysis.bragg.engine import EpieOptions
from analysis.bragg.solvers.options import Execution, FftwEffort
from analysis.geometry import seed_geometry
from analysis.xp import cpu_kernels


def main(n_sweeps: int = 3, fftw_effort: FftwEffort = "FFTW_MEASURE") -> dict[str, float]:
    """Run ``n_sweeps`` ePIE sweeps (probe updated) and return timing and memory numbers."""
    g = seed_geometry(upsampling=1, n_angles=40, n_rows_px=256, n_cols_px=256)
    xs = (np.arange(11) - 5) * 0.1e-6
    stage = np.stack([xs, 0.3 * xs, np.zeros(11)], axis=1)
    frames, probe = synthetic_frames(g, stage, (8.0, 6.0))
    rec = timing_reconstruction(g, frames, stage, probe, n_epie=n_sweeps + 1,
                                epie=EpieOptions(probe_update_start_iter=0),
                                execution=Execution(fftw_effort=fftw_effort))
    rec.iterate(1)                                   # warm-up (FFTW plans, Numba cache load)
    rec.iterate(n_sweeps)
    times = np.asarray(rec.result().timings_s[1:])
    first_s = rec.result().timings_s[0]
    per_sweep = float(np.median(times))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9   # Linux: KiB
    out = {"box_voxels": float(np.prod(g.recon_shape)), "object_voxels": float(np.prod(rec.op.object_shape)),
           "s_per_sweep": per_sweep, "s_per_sweep_min": float(times.min()), "peak_rss_gb": peak_gb,
           "first_sweep_s": float(first_s)}
    path = "fused CPU" if rec.execution.cpu_kernels and cpu_kernels() is not None else "array code"
    print(f"box {g.recon_shape}, object {rec.op.object_shape} ({path}): {per_sweep:.2f} s per sweep median "
          f"(min {times.min():.2f} s, {n_sweeps} sweeps, 11 positions; first sweep with plans {first_s:.2f} s), "
          f"peak RSS {peak_gb:.2f} GB")
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3, *(sys.argv[2:3]))
