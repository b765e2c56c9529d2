"""Seconds per FP-DFXM Zernike-EPRY sweep: 49 frames of 512², ×4 upsampling, NumPy/CPU (docs/fp-dfxm.md, Algorithm).

Run: ``.venv/bin/python benchmarks/bench_fp_dfxm.py [n_px] [n_iterations]``. Data are random
Poisson-like frames (timing only); the pupil update runs every sweep. The one-off
centre-of-mass start (``initial_object_from_diversity``) is timed separately and subtracted.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from analysis.dfxm import FPDFXMGeometry, FPOptions, Reflection, initial_object_from_diversity, reconstruct_fp_dfxm


def main(n_px: int = 512, n_iterations: int = 3) -> float:
    """Print and return seconds per sweep."""
    geom = FPDFXMGeometry(reflection=Reflection(hkl=(0, 0, 2), d_spacing_m=2.018e-10), n_px=n_px, upsampling=4,
                          pixel_size_m=40e-9)
    step_px = round(0.399e-3 / geom.angle_per_freq_px_rad)
    k = (np.arange(7) - 3) * step_px * geom.angle_per_freq_px_rad
    rr, cc = np.meshgrid(k, k, indexing="ij")
    shifts = np.stack([rr.ravel(), cc.ravel()], axis=1)
    frames = np.random.default_rng(0).poisson(100.0, size=(49, n_px, n_px)).astype(float)
    t0 = time.perf_counter()
    initial_object_from_diversity(frames, shifts, geom)
    t_init = time.perf_counter() - t0
    t0 = time.perf_counter()
    reconstruct_fp_dfxm(frames, shifts, geom, options=FPOptions(n_iterations=n_iterations, pupil_update_start_iter=0))
    dt = (time.perf_counter() - t0 - t_init) / n_iterations
    print(f"FP-DFXM Zernike-EPRY: 49 frames of {n_px}², ×4 upsampling, CPU: {dt:.2f} s per iteration "
          f"(+ {t_init:.2f} s once for the centre-of-mass start)")
    return dt


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
