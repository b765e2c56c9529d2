"""Scaling of the ePIE sweep on CPU (issue 5): time per sweep against positions, angles, frame
size and up-sampling, and convergence per second against the mini-batch count.

Sweep timing uses the synthetic problem of ``bench_engine_cpu.py`` (seed geometry, uniform slab
under a Gaussian probe); one parameter varies at a time around 11 positions × 20 angles × 128²,
U = 1. Convergence uses the small noise-free test problem (16 positions) with the sequential
update (docs/mpi.md) and the batched one (B, ``analysis.bragg.solvers.distributed`` on one rank).
Run: ``.venv/bin/python benchmarks/bench_engine_scaling.py`` (prints a Markdown table).
"""

from __future__ import annotations

import time

import numpy as np
from synthetic_bragg import synthetic_frames, timing_reconstruction

from analysis.bragg.engine import EpieOptions
from analysis.bragg.solvers import distributed, epie
from analysis.bragg.solvers.options import Execution
from analysis.geometry import seed_geometry
from testing.bragg_problem import gaussian_probe, initial_state, make_problem


def sweep_time_s(n_positions: int = 11, n_angles: int = 20, n_px: int = 128, upsampling: int = 1,
                 n_sweeps: int = 2, fused: bool = True) -> tuple[float, tuple[int, int, int]]:
    """Median seconds per ePIE sweep (probe updated) and the box shape; ``fused``: CPU kernels or array code."""
    g = seed_geometry(upsampling=upsampling, n_angles=n_angles, n_rows_px=n_px, n_cols_px=n_px)
    xs = (np.arange(n_positions) - n_positions // 2) * 0.1e-6
    stage = np.stack([xs, 0.3 * xs, np.zeros(n_positions)], axis=1)
    frames, probe = synthetic_frames(g, stage, (n_px / 32, g.recon_shape[2] / 7))
    rec = timing_reconstruction(g, frames, stage, probe, n_epie=n_sweeps + 1,
                                epie=EpieOptions(probe_update_start_iter=0), execution=Execution(cpu_kernels=fused))
    rec.iterate(n_sweeps + 1)
    return float(np.median(rec.result().timings_s[1:])), g.recon_shape


def convergence(n_batches: int, n_sweeps: int = 12) -> tuple[float, float, float]:
    """(final cost / first cost, seconds, decades of cost per second); n_batches = 0: sequential."""
    p = make_problem(upsampling=1, n_side=4, seed=4, dtype=np.complex64)
    st = initial_state(p, gaussian_probe(p.geometry, (1.6, 2.4), dtype=np.complex64) * 30.0, background=0.0)
    opts = EpieOptions(n_batches=n_batches, probe_update_start_iter=2)
    rng = np.random.default_rng(0)
    costs = []
    t0 = time.perf_counter()
    for _ in range(n_sweeps):
        if n_batches == 0:
            st, s = epie.step(st, p.data, op=p.op, options=opts, rng=rng)
        else:
            st, s = distributed.step(st, p.data, op=p.op, options=opts, rng=rng)
        costs.append(s.cost)
    dt = time.perf_counter() - t0
    ratio = costs[-1] / costs[0]
    return ratio, dt, float(-np.log10(ratio) / dt)


def main() -> None:
    """Print the two Markdown tables."""
    print("| varied | positions | angles | frame | U | box | s / sweep, fused CPU | s / sweep, array code |\n"
          "|---|---|---|---|---|---|---|---|")
    cases = [("base", {}), ("positions", {"n_positions": 5}), ("positions", {"n_positions": 21}),
             ("angles", {"n_angles": 10}), ("angles", {"n_angles": 40}), ("frame", {"n_px": 64}),
             ("frame", {"n_px": 256}), ("U", {"upsampling": 3})]
    for name, kw in cases:
        t, box = sweep_time_s(**kw)
        t_array, _ = sweep_time_s(**kw, fused=False)
        a = {"n_positions": 11, "n_angles": 20, "n_px": 128, "upsampling": 1, **kw}
        print(f"| {name} | {a['n_positions']} | {a['n_angles']} | {a['n_px']}² | {a['upsampling']} | "
              f"{' × '.join(map(str, box))} | {t:.3f} | {t_array:.3f} |", flush=True)
    print("\n| batches (16 positions) | cost ratio after 12 sweeps | s | decades / s |\n|---|---|---|---|")
    convergence(2, n_sweeps=2)                      # warm-up: FFT plans and operator caches
    for nb in (0, 1, 2, 4, 8, 16):
        r, dt, rate = convergence(nb)
        label = "sequential (A)" if nb == 0 else f"{nb} (B = {-(-16 // nb)})"
        print(f"| {label} | {r:.3g} | {dt:.2f} | {rate:.3f} |", flush=True)


if __name__ == "__main__":
    main()
