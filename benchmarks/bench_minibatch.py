"""Sequential ePIE (docs/mpi.md) against mini-batch ePIE: object error per sweep and per second.

One small simulated problem (testing/bragg_sim.py): 32² ROI, 24 angles, U = 1,
36 jittered positions (6 × 6, 80 nm), tilted 0.3 µm strained slab, noise-free, known probe,
b = 0 and γ = 0, fixed 0.4 µm slab support, no ML. Every variant runs the same number of
sweeps from the same start; E_ρ (lit true support, as bench_seed_angles.py) is taken after
every sweep outside the timed region (the per-sweep times are ``Reconstruction``'s own).
Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_minibatch.py [n_sweeps]``.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from scipy.ndimage import binary_dilation

from analysis.bragg.engine import EpieOptions, MLOptions, Recipe, Reconstruction, SupportSchedule
from analysis.metrics import object_error
from sim.sample import CrystalSample, HomogeneousDisplacement, Slab
from testing.bragg_sim import SimProblem, raster, simulate, small_geometry, small_probe

SCHED = SupportSchedule(thickness_schedule_m=((0, 0.4e-6),), shrinkwrap_start_iter=None)
THRESHOLDS = (0.25, 0.2)
BUDGETS_S = (2.0, 5.0)


def run(p: SimProblem, n_batches: int, n_sweeps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E_ρ after sweeps 0..N, cumulative seconds after sweeps 0..N, cost of sweeps 1..N)."""
    rec = Recipe(n_epie_iterations=n_sweeps, n_ml_iterations=0, support=SCHED, background_init=0.0,
                 epie=EpieOptions(update_probe=False, gamma=0.0, n_batches=n_batches),
                 ml=MLOptions(update_probe=False))
    r = Reconstruction(p.geometry, p.frames, p.mask, p.stage_xyz_m, p.rocking_offsets_deg, p.probe_p2, recipe=rec)
    shape = r.state.object.shape
    tru = p.truth_object(shape, r._grid.origin_vox)  # noqa: SLF001
    ill = np.zeros(shape)
    for j in range(p.stage_xyz_m.shape[0]):
        ill[r.op.view(r.data.offsets_vox[j])] += np.abs(r.op.probe_at(p.probe_p2, r.data.shifts_px[j])) ** 2
    lit = binary_dilation(np.abs(tru) > 0.5, iterations=1) & (ill >= 0.2 * ill.max())
    errs = [object_error(np.asarray(r.state.object), tru, support=lit).error]      # sweep 0: the slab start
    for _ in range(n_sweeps):
        r.iterate(1)
        errs.append(object_error(np.asarray(r.state.object), tru, support=lit).error)
    res = r.result()
    return np.asarray(errs), np.concatenate([[0.0], np.cumsum(res.timings_s)]), np.asarray(res.costs)


def main(n_sweeps: int = 100) -> None:
    """Run the benchmark with ``n_sweeps`` ePIE sweeps and print its results."""
    g = small_geometry()
    sample = CrystalSample(slab=Slab(thickness_m=0.3e-6, tilt_x_deg=5.5, tilt_y_deg=-2.0, edge_width_m=60e-9),
                           homogeneous=HomogeneousDisplacement(strain=2e-4, tilt_x_rad=1e-4))
    t0 = time.perf_counter()
    p = simulate(sample, geometry=g, probe=small_probe(), stage_xyz_m=raster(6, 0.08e-6))
    n_pos = p.stage_xyz_m.shape[0]
    print(f"{n_pos} positions × {g.n_angles} angles × {g.n_rows_px}², box {g.recon_shape}; simulated in "
          f"{time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f}")
    print("| variant | batches × size | E_ρ after 0 / 10 / 30 / N sweeps | s / sweep (median) | "
          + " | ".join(f"E_ρ at {b:g} s" for b in BUDGETS_S) + " | "
          + " | ".join(f"s (sweeps) to E_ρ ≤ {th}" for th in THRESHOLDS) + " | ePIE cost 1st → last |")
    for nb in (0, 1, 4, 12):
        errs, t, cost = run(p, nb, n_sweeps)
        per = np.median(np.diff(t))
        at = [f"{errs[np.flatnonzero(t <= b)[-1]]:.3f}" if t[-1] >= b else "—" for b in BUDGETS_S]
        reach = []
        for th in THRESHOLDS:
            k = np.flatnonzero(errs <= th)
            reach.append(f"{t[k[0]]:.1f} ({k[0]})" if k.size else "—")
        name = "sequential (A)" if nb == 0 else ("full batch (C)" if nb == 1 else "mini-batch (B)")
        size = f"{n_pos} × 1" if nb == 0 else f"{nb} × {-(-n_pos // nb)}"
        e = [errs[min(k, n_sweeps)] for k in (0, 10, 30, n_sweeps)]
        print(f"| {name} | {size} | " + " / ".join(f"{v:.3f}" for v in e) + f" | {per:.3f} | " + " | ".join(at)
              + " | " + " | ".join(reach) + f" | {cost[0]:.3g} → {cost[-1]:.3g} |", flush=True)
        np.savetxt(sys.stdout, np.stack([np.arange(n_sweeps + 1), t, errs], 1)[::10], fmt="%.4f",
                   header=f"n_batches={nb}: sweep, cumulative s, E_rho (every 10th)")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
