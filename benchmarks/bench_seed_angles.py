"""Seed claim (Li et al. 2021): 7 angles with U = 18 reach the quality of 42 angles with U = 1.

One simulated rocking scan of 42 angles at Δθ (U = 1 window R3 = 1 µm); the 7-angle data
set is every 6th of those angles (step 6Δθ, same q3 range), reconstructed with U = 18
(δθ = Δθ/3). Known probe, noise-free, 36 jittered positions (6 × 6, 80 nm), 32² ROI. Quality: object
error E_ρ and phase RMSE on the lit true support (as tests/system/test_reconstruct_sim.py).
Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_seed_angles.py [n_epie n_ml]``.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
from scipy.ndimage import binary_dilation

from analysis.engine import EpieOptions, MLOptions, Reconstruction, Recipe, SupportSchedule
from analysis.metrics import object_error
from sim.sample import CrystalSample, HomogeneousDisplacement, Slab
from tests.system.bragg_sim_problem import SimProblem, raster, simulate, small_geometry, small_probe, truth_p2


def reconstruct(p: SimProblem, n_epie: int, n_ml: int) -> tuple[float, float, float]:
    """Known-probe reconstruction; returns (E_ρ lit, phase RMSE rad, seconds)."""
    t0 = time.perf_counter()
    sched = SupportSchedule(thickness_schedule_m=((0, 0.4e-6),), shrinkwrap_start_iter=10 ** 6,
                            shrinkwrap_stop_iter=10 ** 6)
    rec = Recipe(n_epie_iterations=n_epie, n_ml_iterations=n_ml, support=sched, background_init=0.0,
                 epie=EpieOptions(update_probe=False, gamma=0.0), ml=MLOptions(update_probe=False))
    r = Reconstruction(p.geometry, p.frames, p.mask, p.stage_xyz_m, p.rocking_offsets_deg, p.probe_p2, recipe=rec)
    r.iterate(rec.n_iterations)
    res = r.result()
    vg = r._grid  # noqa: SLF001
    tru = p.truth_object(res.object.shape, vg.origin_vox)
    ill = np.zeros(res.object.shape)
    for j in range(p.stage_xyz_m.shape[0]):
        ill[r.op.view(res.offsets_vox[j])] += np.abs(r.op.probe_at(p.probe_p2, res.shifts_px[j])) ** 2
    lit = binary_dilation(np.abs(tru) > 0.5, iterations=1) & (ill >= 0.2 * ill.max())
    e = object_error(res.object, tru, support=lit)
    return e.error, e.phase_rmse_rad, time.perf_counter() - t0


def main(n_epie: int = 150, n_ml: int = 50) -> None:
    g42 = small_geometry(n_angles=42, window3_m=1.0e-6)
    sample = CrystalSample(slab=Slab(thickness_m=0.3e-6, tilt_x_deg=5.5, tilt_y_deg=-2.0, edge_width_m=60e-9),
                           homogeneous=HomogeneousDisplacement(strain=2e-4, tilt_x_rad=1e-4))
    probe = small_probe()
    t0 = time.perf_counter()
    p42 = simulate(sample, geometry=g42, probe=probe, stage_xyz_m=raster(6, 0.08e-6))
    print(f"42 angles × {g42.rocking_step_deg:.5f}°, U=1: box {g42.recon_shape}; simulated in "
          f"{time.perf_counter() - t0:.0f} s")
    g7 = dataclasses.replace(g42, n_angles=7, rocking_step_deg=6 * g42.rocking_step_deg, upsampling=18)
    sel = np.arange(3, 42, 6)                       # offsets (−18, −12, …, +18)·Δθ
    assert np.allclose(p42.rocking_offsets_deg[sel], (np.arange(7) - 3) * g7.rocking_step_deg)
    p7 = dataclasses.replace(p42, geometry=g7, frames=p42.frames[:, sel], rocking_offsets_deg=p42.rocking_offsets_deg[sel],
                             probe_p2=truth_p2(g7, probe))
    print(f"7 angles × {g7.rocking_step_deg:.5f}°, U=18: box {g7.recon_shape}")
    for name, p in (("42 angles, U=1", p42), ("7 angles, U=18", p7)):
        e, ph, s = reconstruct(p, n_epie, n_ml)
        print(f"{name}: E_rho {e:.4f}, phase RMSE {ph:.4f} rad ({s:.0f} s, {n_epie} ePIE + {n_ml} ML)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
