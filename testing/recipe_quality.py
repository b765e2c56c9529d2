"""Recipes scored against the truth along the run: the cases and the runner of "quality by recipe" (issue 14).

Shared by ``benchmarks/bench_recipe_quality.py`` (the table in docs/benchmarks.md) and
``tests/system/test_default_recipe_sim.py``. Each recipe is a preset of :data:`analysis.bragg.recipes.PRESETS`
scaled to ``n_epie`` sweeps (ML scaled with it, as ``pxm reconstruct --iterations N``), given the sample's
thickness and tilt by :func:`analysis.bragg.recipes.resolve_sample`, and scored at about 20 checkpoints.

Cases:

* ``demo``: the geometry of ``pxm demo`` (seed W(220) at 8 keV, 64² ROI, 9 angles of 0.005°, U = 3), the seed-like
  foil of :func:`sim.seed_sample` (tilted slab, grain boundary, implanted layer, surface layers, two
  dislocations), its aberrated KB probe, a 5 × 5 raster of 0.1 µm, Poisson noise at 1e9 ph/s × 0.2 s; initial
  probe: the CLI's KB model (no probe file), NA mask 1.5 × its NA;
* ``seed-like``: :func:`testing.bragg_sim.seed_like_problem` (the problem of docs/seed-schedule.md), initial probe a
  60 nm flat-phase Gaussian;
* ``engine-model``: a *different* phantom (0.3 µm slab tilted −3°/+4°, one dislocation, no implanted layer) put
  through the engine's own model (``testing.bragg_sim.exact_model_frames``, Poisson noise at the seed-like dose):
  data the model describes exactly; initial probe the 60 nm Gaussian;
* ``ptypy``: ``../shared/data/ptypy_bragg_case_dev.h5`` imported as ``pxm import-ptypy-bragg`` does (U from Eq 12),
  its known probe as the start, thickness estimated from the data; error on the truth's own lattice
  (:func:`analysis.bragg.ptypy_bragg.compare_with_truth`); no strain truth.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.bragg.engine import Recipe, Reconstruction
from analysis.bragg.recipes import GivenSupport, recipe_by_name, resolve_sample

PTYPY_CASE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptypy_bragg_case_dev.h5"
N_CHECKPOINTS = 20
"""Checkpoints per run (evenly spaced, plus the end of ePIE and the last iteration)."""


@dataclass
class Case:
    """What a run needs: the engine's inputs, the sample metadata and a scorer of the current state."""

    name: str
    geometry: Any
    frames: np.ndarray
    mask: np.ndarray
    stage_xyz_m: np.ndarray
    rocking_offsets_deg: np.ndarray
    probe: np.ndarray
    probe_na_rad: tuple[float, float] | None
    sample: dict[str, Any]
    score: Callable[[Reconstruction], dict[str, float]]
    """E (error vs truth) and, where there is a strain truth, strain RMSE of the engine's current state."""
    estimate: Callable[[Any], Any] | None = None
    notes: list[str] = field(default_factory=list)


def _sim_scorer(problem: Any, sample: Any) -> Callable[[Reconstruction], dict[str, float]]:
    from testing.bragg_sim import score_reconstruction

    def score(r: Reconstruction) -> dict[str, float]:
        s = score_reconstruction(problem, sample, r.result(), r.op, r._grid.origin_vox)  # noqa: SLF001
        return {"error": s.object_error, "strain_rmse": s.strain_rmse, "phase_rmse_rad": s.phase_rmse_rad}
    return score


def _sample_md(sample: Any) -> dict[str, Any]:
    return {"thickness_m": sample.slab.thickness_m, "tilt_x_deg": sample.slab.tilt_x_deg,
            "tilt_y_deg": sample.slab.tilt_y_deg}


def demo_case(seed: int = 2021, *, n_angles: int | None = None, resolvable: bool = False) -> Case:
    """The data of ``pxm demo`` (its defaults), simulated without the beamline.

    ``resolvable``: the smallest demo-like set the engine's grid can describe (docs/benchmarks.md, "Quality by
    recipe"): 21 angles instead of 9 (the 0.045° range of 9 angles gives Δr3 = 197 nm, too coarse for the probe's
    angular spread k·NA_v and the implanted layer's peak shift: no object on that grid explains the frames, the
    true one gives R = 1.08), the probe cut to the detector window λD/p = 3.94 µm, and the seed foil without
    the FIB surface layers and dislocation cores and with 60 nm edges (finer than the grid's band).
    """
    from analysis.bragg.probe_init import model_probe
    from pxm.demo import DemoOptions, demo_geometry
    from sim import KBProbe, seed_sample
    from testing.bragg_sim import raster, simulate

    opts = DemoOptions()   # pxm demo's sizes and dose; the angle count is this case's (9: the old default)
    g = dataclasses.replace(demo_geometry(opts), n_angles=n_angles or (21 if resolvable else 9))
    sample = seed_sample(rocking_centre_offset_deg=0.0)   # the demo's alignment centres the rocking scan
    if resolvable:
        probe = KBProbe(energy_kev=g.energy_kev, extent_h_m=3.9e-6)
        sample = dataclasses.replace(sample, surface_layers=None, dislocations=(),
                                     slab=dataclasses.replace(sample.slab, edge_width_m=60e-9),
                                     grain_boundary=dataclasses.replace(sample.grain_boundary, edge_width_m=60e-9))
    else:
        probe = KBProbe(energy_kev=g.energy_kev)
    stage = raster(opts.n_raster, opts.raster_step_um * 1e-6, jitter=0.15, seed=seed)
    p = simulate(sample, geometry=g, probe=probe, stage_xyz_m=stage, exposure_s=opts.exposure_s,
                 flux_ph_per_s=opts.flux_ph_per_s, noise_seed=seed)
    p2 = model_probe(g, na_v_rad=probe.na_v, na_h_rad=probe.na_h)
    name = "demo-21" if resolvable else "demo"
    return Case(name, g, p.frames.astype(np.float32), p.mask, p.stage_xyz_m, p.rocking_offsets_deg, p2,
                (probe.na_v, probe.na_h), _sample_md(sample), _sim_scorer(p, sample))


def seed_like_case() -> Case:
    """docs/seed-schedule.md's problem."""
    from testing.bragg_sim import SEED_LIKE_SAMPLE, gaussian_p2, seed_like_problem

    p = seed_like_problem(noise_seed=1)
    return Case("seed-like", p.geometry, p.frames.astype(np.float32), p.mask, p.stage_xyz_m, p.rocking_offsets_deg,
                gaussian_p2(p.geometry, 60e-9), (6e-4, 6e-4), _sample_md(SEED_LIKE_SAMPLE),
                _sim_scorer(p, SEED_LIKE_SAMPLE))


ENGINE_MODEL_SAMPLE_KW = dict(thickness_m=0.3e-6, tilt_x_deg=-3.0, tilt_y_deg=4.0)


def engine_model_case(seed: int = 7) -> Case:
    """Another phantom through the engine's own model, Poisson noise at the seed-like dose."""
    from sim.sample import CrystalSample, Dislocation, Slab
    from testing.bragg_sim import (
        TUNGSTEN_A_M,
        exact_model_frames,
        gaussian_p2,
        raster,
        simulate,
        small_geometry,
        small_probe,
    )

    d220 = TUNGSTEN_A_M / np.sqrt(8.0)
    sample = CrystalSample(slab=Slab(**ENGINE_MODEL_SAMPLE_KW, edge_width_m=40e-9),
                           dislocations=(Dislocation(point_m=(0.05e-6, -0.1e-6, 0.0), line_direction=(0.3, 1.0, 0.5),
                                                     burgers_m=(0.0, 0.0, d220)),))
    g = small_geometry()
    p = simulate(sample, geometry=g, probe=small_probe(), stage_xyz_m=raster(4, 0.12e-6, seed=3), noise_seed=None)
    r = Reconstruction(g, p.frames.astype(np.float32), p.mask, p.stage_xyz_m, p.rocking_offsets_deg, p.probe_p2,
                       recipe=Recipe(n_epie_iterations=0, n_ml_iterations=0))
    truth = p.truth_object(r.state.object.shape, r._grid.origin_vox)  # noqa: SLF001
    lam = exact_model_frames(p, r, truth)
    frames = np.random.default_rng(seed).poisson(lam).astype(np.float32)
    p = dataclasses.replace(p, frames=frames)
    return Case("engine-model", g, frames, p.mask, p.stage_xyz_m, p.rocking_offsets_deg, gaussian_p2(g, 60e-9),
                (6e-4, 6e-4), _sample_md(sample), _sim_scorer(p, sample),
                notes=["frames: the truth through the engine's model (exact_model_frames), Poisson"])


def ptypy_case(path: Path = PTYPY_CASE) -> Case:
    """The ptypy Bragg case, imported as `pxm import-ptypy-bragg` does."""
    from analysis.bragg.ptypy_bragg import (
        compare_with_truth,
        lattice_transfer,
        probe_p2,
        pxm_dataset,
        read_ptypy_bragg,
        smallest_upsampling,
    )
    from analysis.bragg.thickness import estimate_thickness_m
    from analysis.dataset import scan_axes

    case = read_ptypy_bragg(path)
    u = smallest_upsampling(case)
    ds = pxm_dataset(case, upsampling=u)
    g = ds.geometry
    stage, offs = scan_axes(ds.rocking_angle_deg, ds.stage_position_m, g)
    frames = np.asarray(ds.frames, np.float32)
    mask = np.asarray(ds.detector_mask, bool)

    def score(r: Reconstruction) -> dict[str, float]:
        grid = r._grid  # noqa: SLF001
        tr = lattice_transfer(g, case.theta_bragg_deg, tuple(grid.object_shape), grid.origin_vox, grid.offsets_vox)
        c = compare_with_truth(np.asarray(r.result().object), tr, case)
        return {"error": c.error, "strain_rmse": float("nan"), "amplitude_correlation": c.amplitude_correlation}

    def estimate(normal: Any) -> Any:
        return estimate_thickness_m(frames, mask, g, offs, normal=normal)

    return Case("ptypy", g, frames, mask, stage, offs, probe_p2(case, g), None, {}, score, estimate=estimate,
                notes=[f"U = {u} (Eq 12)"])


CASES: dict[str, Callable[[], Case]] = {"demo": demo_case, "demo-21": lambda: demo_case(resolvable=True),
                                        "seed-like": seed_like_case,
                                        "engine-model": engine_model_case, "ptypy": ptypy_case}


def checkpoints(recipe: Recipe, n: int = N_CHECKPOINTS) -> list[int]:
    """About ``n`` evenly spaced iterations, the end of ePIE and the last iteration."""
    total = recipe.n_iterations
    its = {int(round(total * (k + 1) / n)) for k in range(n)} | {recipe.n_epie_iterations, total}
    return sorted(i for i in its if 0 < i <= total)


def run(case: Case, recipe_name: str, n_epie: int | None, *, ml_smoothness: float | None = None,
        overrides: dict[str, Any] | None = None, verbose: bool = True) -> dict[str, Any]:
    """One recipe on one case, scored at every checkpoint: best and last error, their difference (``margin``).

    ``n_epie`` None runs the preset's own sweep count; ``ml_smoothness`` overrides its ML prior strength;
    ``overrides`` sets recipe fields as a recipe file would (e.g. ``{"epie": {"dm_iterations": 60}}``), before
    the schedule is scaled to ``n_epie``.
    """
    from analysis.bragg.recipes import PRESETS, recipe_with, schedule_iterations

    if overrides:
        if recipe_name not in PRESETS:
            raise ValueError(f"unknown recipe {recipe_name!r}; choose one of {', '.join(PRESETS)}")
        recipe = schedule_iterations(recipe_with(PRESETS[recipe_name](), overrides), n_epie_iterations=n_epie)
    else:
        recipe = recipe_by_name(recipe_name, n_epie_iterations=n_epie)
    if ml_smoothness is not None:
        recipe = dataclasses.replace(recipe, ml=dataclasses.replace(recipe.ml, smoothness=ml_smoothness))
    recipe = resolve_sample(recipe, recipe_name=recipe_name, sample=case.sample, given=GivenSupport(),
                            estimate=case.estimate)
    r = Reconstruction(case.geometry, case.frames, case.mask, case.stage_xyz_m, case.rocking_offsets_deg, case.probe,
                       recipe=recipe, probe_na_rad=case.probe_na_rad)
    rows, t_iter = [], 0.0
    for it in checkpoints(recipe):
        t0 = time.perf_counter()
        r.iterate(it - r.iteration)
        t_iter += time.perf_counter() - t0
        sc = case.score(r)
        rows.append({"iteration": it, "phase": r.result().phases[-1], "r_factor": r.r_factor(), **sc})
        if verbose:
            print(f"  [{case.name}/{recipe_name}] it {it:5d} {rows[-1]['phase']}: E {sc['error']:.4f} "
                  f"strain RMSE {sc['strain_rmse']:.3g} R {rows[-1]['r_factor']:.4f} ({t_iter:.0f} s)", flush=True)
    errs = np.array([row["error"] for row in rows])
    best = int(np.nanargmin(errs))
    return {"case": case.name, "recipe": recipe_name, "n_epie": recipe.n_epie_iterations,
            "n_ml": recipe.n_ml_iterations, "ml_smoothness": recipe.ml.smoothness, "sources": list(recipe.sources),
            "best_error": float(errs[best]), "best_iteration": rows[best]["iteration"],
            "last_error": float(errs[-1]), "margin": float(errs[-1] - errs[best]),
            "last_strain_rmse": rows[-1]["strain_rmse"], "last_r_factor": rows[-1]["r_factor"],
            "iterate_s": t_iter, "checkpoints": rows, "notes": case.notes}


