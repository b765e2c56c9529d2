"""The seed's whole schedule (seed Methods; docs/seed-schedule.md), scaled to 60 ePIE + 20 ML sweeps, on simulator data.

Seed-like phantom: a 0.45 µm W(220) slab tilted 5.5° about x and −2° about y with a 3e-4
implanted layer; Poisson noise (1e9 ph/s × 0.2 s); the probe is retrieved from a σ = 60 nm
flat-phase Gaussian; b = 0.1, γ = 0.1, μ = 0.02; NA mask 1.5 × NA. The scaled schedule
(:func:`analysis.bragg.engine.scaled_recipe`): slab 0.5/0.7/0.9 µm from sweeps 0/6/12, shrink-wrap at
15 % every sweep in 18–30, probe frozen for sweep 0, then amplitude-Gaussian ML.

Measured (2026-11-21): E_ρ 0.31 on the lit crystal (phase RMSE 0.24 rad), E_P 0.031, strain RMSE
3.6e-5. The same run with the support fixed at 0.5 µm (no widening, no shrink-wrap) reaches
E_ρ 0.149 (phase 0.13 rad): with only 6 sweeps per thickness step, the widened 0.7/0.9 µm slab lets
amplitude spread along the slab normal (soft lower face, a tail 50–100 nm beyond the upper face)
and 13 shrink-wrap passes at 15 % remove only part of it. The thresholds below are what this short
schedule reaches, with margin, not the acceptance targets (issue 3). The unscaled schedule (1000 + 500) on this problem:
docs/seed-schedule.md (E_ρ 0.172 at sweep 100, 0.254 at 1000, then the ML phase fits the simulator/engine
mismatch and E_ρ collapses to 1.0; ``benchmarks/bench_seed_schedule.py``).
"""

from __future__ import annotations

import pytest

from analysis.bragg.engine import Reconstruction, scaled_recipe, seed_recipe
from testing.bragg_sim import SEED_LIKE_SAMPLE, gaussian_p2, score_reconstruction, seed_like_problem

MAX_OBJECT_ERROR = 0.45
MAX_PROBE_ERROR = 0.06
MAX_STRAIN_RMSE = 1e-4


def test_scaled_recipe_breakpoints():
    """60/1000 of the seed schedule: every sweep breakpoint scaled, none collapsed to 0."""
    r = scaled_recipe(seed_recipe(), n_epie_iterations=60, n_ml_iterations=20)
    assert (r.n_epie_iterations, r.n_ml_iterations) == (60, 20)
    assert r.support.thickness_schedule_m == ((0, 0.5e-6), (6, 0.7e-6), (12, 0.9e-6))
    assert (r.support.shrinkwrap_start_iter, r.support.shrinkwrap_stop_iter, r.support.shrinkwrap_every) == (18, 30, 1)
    assert r.epie.probe_update_start_iter == 1 and r.epie.na_mask_stop_iter == 60
    assert scaled_recipe(seed_recipe(), n_epie_iterations=1000) == seed_recipe()
    tiny = scaled_recipe(seed_recipe(), n_epie_iterations=5)
    assert tiny.support.thickness_schedule_m == ((0, 0.5e-6), (1, 0.9e-6)) and tiny.n_ml_iterations == 2
    with pytest.raises(ValueError):
        scaled_recipe(seed_recipe(), n_epie_iterations=0)


def test_seed_schedule_joint_probe_poisson():
    """Support schedule, shrink-wrap, frozen probe, NA mask and ML, end to end (≈ 15 s)."""
    p = seed_like_problem(noise_seed=1)
    g = p.geometry
    recipe = scaled_recipe(seed_recipe(), n_epie_iterations=60, n_ml_iterations=20)
    r = Reconstruction(g, p.frames, p.mask, p.stage_xyz_m, p.rocking_offsets_deg, gaussian_p2(g, 0.06e-6),
                       recipe=recipe, probe_na_rad=(6e-4, 6e-4))
    r.iterate(recipe.support.shrinkwrap_start_iter)
    s_before = int(r.result().support.sum())
    r.iterate(recipe.n_iterations - r.iteration)
    res = r.result()
    sc = score_reconstruction(p, SEED_LIKE_SAMPLE, res, r.op, r._grid.origin_vox)  # noqa: SLF001 - engine's grid
    print(f"seed schedule 60+20: E_rho {sc.object_error:.4f} (phase {sc.phase_rmse_rad:.3f} rad), "
          f"E_P {sc.probe_error:.4f}, strain RMSE {sc.strain_rmse:.3g} on {sc.n_strain_voxels} voxels; support "
          f"{s_before} -> {sc.support_voxels} voxels, lit crystal kept {sc.lit_crystal_kept:.3f}")
    assert res.phases.count("epie") == 60 and res.phases.count("ml") == 20
    assert res.support.sum() < 0.8 * s_before            # shrink-wrap cut the 0.9 µm slab
    assert sc.lit_crystal_kept > 0.85                     # ... but not the lit crystal
    assert sc.object_error < MAX_OBJECT_ERROR
    assert sc.probe_error < MAX_PROBE_ERROR
    assert sc.n_strain_voxels > 300 and sc.strain_rmse < MAX_STRAIN_RMSE
