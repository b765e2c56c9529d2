"""Fewer rocking angles with angular up-sampling against the full scan (seed claim, issue 3; docs/seed-angles.md).

Li et al. 2021 report that 7 angles at 0.03° with up-sampling U = 18 give an image comparable to 42
angles at 0.005° without up-sampling (the fixed-probe "former strategy"). In our simulation (small
problem of ``testing.bragg_sim``, known probe, noise-free) the reduction works when the probe's
rocking spread NA_V/Δθ of the *reduced* step is ≳ 1.3 and fails at the seed's 0.7: here 21 angles with
U = 6 (NA_V/Δθ = 1.9) against the 42-angle U = 1 scan they are taken from; 7 angles with U = 18
(0.64) do not reach it (benchmark only). Scaled down from ``benchmarks/bench_seed_angles.py`` (16 instead
of 36 positions, 40 + 10 instead of 150 + 50 iterations), where E_ρ is 0.064 (21/U = 6), 0.167 (42/U = 1)
and 0.292 (7/U = 18);
at this size (2026-11-21): 0.287, 0.228 and 0.431, so the bounds below are looser than the benchmark's
1.2× criterion. With the ML smoothness prior (docs/seed-angles.md section 6; 40 + 30 iterations here) the
7-angle set beats the former strategy as the seed ran it (0.145 against 0.209 without the prior) but not
the 42 angles given the same prior (0.064). On exact-model data started next to the truth (section 8) the 7
planes keep 3× the 42 planes' error: the gap is in the data. About 65 s on the 2-core sandbox.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis.bragg.engine import EpieOptions, MLOptions, Recipe, Reconstruction, SupportSchedule
from analysis.metrics import object_error
from sim.sample import CrystalSample, HomogeneousDisplacement, Slab
from testing.bragg_sim import (
    SimProblem,
    exact_model_frames,
    lit_regions,
    raster,
    reduced_rocking_set,
    simulate,
    small_geometry,
    small_probe,
    start_next_to_truth,
)

N_EPIE, N_ML = 40, 10
SUPPORT = SupportSchedule(thickness_schedule_m=((0, 0.4e-6),), shrinkwrap_start_iter=None)


def _object_error(p: SimProblem, n_ml: int = N_ML, smoothness: float = 0.0) -> float:
    """E_ρ on the lit true support after N_EPIE ePIE + ``n_ml`` amplitude-ML iterations, known probe."""
    rec = Recipe(n_epie_iterations=N_EPIE, n_ml_iterations=n_ml, support=SUPPORT, background_init=0.0,
                 epie=EpieOptions(update_probe=False, gamma=0.0),
                 ml=MLOptions(update_probe=False, smoothness=smoothness))
    r = Reconstruction(p.geometry, p.frames, p.mask, p.stage_xyz_m, p.rocking_offsets_deg, p.probe_p2, recipe=rec)
    r.iterate(rec.n_iterations)
    obj = r.result().object
    tru, _, lit, _ = lit_regions(p.geometry, p.simulator, p.probe_p2, p.stage_xyz_m, obj.shape)
    return object_error(obj, tru, support=lit).error


@pytest.fixture(scope="module")
def full_scan() -> tuple[SimProblem, object]:
    """42 angles (R3 = 1 µm at U = 1), 16 jittered positions, tilted strained 0.3 µm slab, noise-free."""
    probe = small_probe()
    sample = CrystalSample(slab=Slab(thickness_m=0.3e-6, tilt_x_deg=5.5, tilt_y_deg=-2.0, edge_width_m=60e-9),
                           homogeneous=HomogeneousDisplacement(strain=2e-4, tilt_x_rad=1e-4))
    p42 = simulate(sample, geometry=small_geometry(n_angles=42, window3_m=1.0e-6), probe=probe,
                   stage_xyz_m=raster(4, 0.08e-6))
    return p42, probe


def test_reduced_rocking_set_keeps_fine_step_and_range(full_scan) -> None:
    """7 angles with U = 18: step 6Δθ, δθ = Δθ/3 as 42 angles with U = 3, same centred q3 range."""
    p42, probe = full_scan
    p7 = reduced_rocking_set(p42, probe, n_angles=7, upsampling=18)
    g42, g7 = p42.geometry, p7.geometry
    assert np.isclose(g7.rocking_step_deg, 6 * g42.rocking_step_deg)
    assert np.isclose(g7.fine_step_rad * 3, np.radians(g42.rocking_step_deg))
    np.testing.assert_allclose(p7.rocking_offsets_deg,
                               (np.arange(7) - 3) * g7.rocking_step_deg + p42.rocking_offsets_deg[21])
    np.testing.assert_array_equal(p7.frames, p42.frames[:, 3::6])
    assert p7.probe_p2.shape == g7.recon_shape[1:] == (32, 126)
    with pytest.raises(ValueError):
        reduced_rocking_set(p42, probe, n_angles=5, upsampling=3)


@pytest.mark.slow
def test_half_the_angles_with_upsampling_match_the_full_scan(full_scan) -> None:
    """21 angles with U = 6 (NA_V/Δθ 1.9) stay within 1.35× the E_ρ of the 42 angles they come from.

    The 7-angle, U = 18 set (NA_V/Δθ 0.64, the seed's claim) is measured in
    benchmarks/bench_seed_angles.py and docs/seed-angles.md, not asserted here: it is 1.7–1.9×
    worse in every condition tried; that it is the data, not the solver, is the next test.
    """
    p42, probe = full_scan
    e42 = _object_error(p42)
    e21 = _object_error(reduced_rocking_set(p42, probe, n_angles=21, upsampling=6))
    print(f"E_rho: 42/U=1 {e42:.3f}, 21/U=6 {e21:.3f}")
    assert e42 < 0.3
    assert e21 <= 1.35 * e42


@pytest.mark.slow
def test_seven_angles_with_the_ml_prior_reach_the_former_strategy_not_the_full_scan_with_it(full_scan) -> None:
    """The seed's comparison (docs/seed-angles.md section 6), 40 + 30 iterations for every set: 7 angles with
    U = 18 and the ML smoothness prior (s = 0.01) reach 42 angles, U = 1 without it (the former strategy as the
    seed ran it, no regulariser); the same prior given to the 42 angles keeps them well ahead (measured
    2026-12-04: 0.145, 0.209, 0.064)."""
    p42, probe = full_scan
    p7 = reduced_rocking_set(p42, probe, n_angles=7, upsampling=18)
    e42_former = _object_error(p42, n_ml=30)
    e7_prior = _object_error(p7, n_ml=30, smoothness=0.01)
    e42_prior = _object_error(p42, n_ml=30, smoothness=0.01)
    print(f"E_rho: 42/U=1 {e42_former:.3f}, 7/U=18 + prior {e7_prior:.3f}, 42/U=1 + prior {e42_prior:.3f}")
    assert e7_prior <= 1.0 * e42_former
    assert e42_prior <= e7_prior / 1.6


def _error_next_to_the_truth(p: SimProblem, n_ml: int) -> tuple[float, float]:
    """(E_ρ start, E_ρ after ``n_ml`` amplitude-ML iterations) on exact-model frames of the true object, from the
    truth with a 1 rad RMS smooth phase error (and an amplitude factor of RMS 0.5) on the lit support; known probe."""
    rec = Recipe(n_epie_iterations=0, n_ml_iterations=n_ml, support=SUPPORT, background_init=0.0,
                 epie=EpieOptions(update_probe=False, gamma=0.0), ml=MLOptions(update_probe=False))
    r = Reconstruction(p.geometry, p.frames, p.mask, p.stage_xyz_m, p.rocking_offsets_deg, p.probe_p2, recipe=rec)
    tru, _, lit, _ = lit_regions(p.geometry, p.simulator, p.probe_p2, p.stage_xyz_m, r.state.object.shape)
    r = Reconstruction(p.geometry, exact_model_frames(p, r, tru), p.mask, p.stage_xyz_m, p.rocking_offsets_deg,
                       p.probe_p2, recipe=rec)
    start_next_to_truth(r, tru, lit, phase_rms_rad=1.0, corr_vox=3.0)
    e0 = object_error(r.result().object, tru, support=lit).error
    r.iterate(n_ml)
    return e0, object_error(r.result().object, tru, support=lit).error


@pytest.mark.slow
def test_seven_planes_do_not_determine_the_object_even_next_to_the_truth(full_scan) -> None:
    """Local identifiability (docs/seed-angles.md section 8): frames made by the engine's own model from the
    true object, so the truth fits them exactly, and ML started next to it (1 rad RMS smooth phase error).
    The 42 planes take nearly all of the error out; the 7 planes with U = 18 leave several times more, so the
    7-angle gap is in the data (a better solver cannot close it), not in the solver or the simulator mismatch.
    Measured 2026-12-05 (16 positions, 100 ML): 0.905 → 0.071 (42/U = 1), 0.860 → 0.216 (7/U = 18)."""
    p42, probe = full_scan
    e0_42, e42 = _error_next_to_the_truth(p42, 100)
    e0_7, e7 = _error_next_to_the_truth(reduced_rocking_set(p42, probe, n_angles=7, upsampling=18), 100)
    print(f"E_rho next to the truth: 42/U=1 {e0_42:.3f} -> {e42:.3f}, 7/U=18 {e0_7:.3f} -> {e7:.3f}")
    assert e0_42 > 0.6 and e0_7 > 0.6                      # a real perturbation for both
    assert e42 < 0.15 * e0_42                              # the 42 planes hold the object
    assert e7 > 2.0 * e42                                  # the 7 planes do not
