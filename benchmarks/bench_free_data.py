"""Held-out ("free") data cross-validation on the seed schedule (issue 3): does the free cost find the E_ρ minimum.

Problem and start as :mod:`benchmarks.bench_seed_schedule` (``seed_like_problem(noise_seed=1)``, σ = 60 nm
Gaussian start, NA mask 1.5 × 6e-4), recipe ``seed_recipe()`` (1000 ePIE + 500 ML) with
``Recipe.free`` = :class:`analysis.bragg.engine.FreeDataOptions`. Variants (``--variants``):

* ``none``: no held-out data, scored up to ``--reference-sweeps`` (what the held-out data costs);
* ``track-entry`` / ``track-frame``: 5 % held out (single detector-voxels / whole frames), free cost every
  10 iterations, never stopped, never restored: the whole trajectory, E_ρ and free cost side by side;
* ``stop-entry`` / ``stop-frame``: the same with the patience rule (``--patience`` checks) and the best
  state restored at the end of each phase: the result a user would get.

* ``noise-control``: a control without model mismatch: the tiny problem of ``testing/bragg_problem.py``
  (data from the engine's own model, 9 positions × 12 angles, true probe fixed, slab support) with Poisson noise at
  ``--control-peaks`` photons in the brightest pixel, 400 ePIE + 400 ML, 5 % of the entries held out, tracked only;
  E_ρ there is :func:`testing.bragg_problem.object_error` on the lit true support, both band-limited.

Scores: :func:`testing.bragg_sim.score_reconstruction` (E_ρ on the lit crystal, strain RMSE,
layer step). Run: ``PYTHONPATH=. nice -n 19 .venv/bin/python benchmarks/bench_free_data.py
[--variants ...] [--fraction 0.05] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from analysis.bragg.engine import FreeDataOptions, Recipe, Reconstruction, seed_recipe
from benchmarks.bench_seed_schedule import INITIAL_PROBE_SIGMA_M, PROBE_NA_RAD
from testing.bragg_sim import (
    SEED_LIKE_SAMPLE,
    SimProblem,
    gaussian_p2,
    score_reconstruction,
    seed_like_problem,
    truth_amplitude_cost,
)

CHECKPOINTS = (10, 20, 50, 100, 150, 200, 300, 400, 500, 750, 1000, 1010, 1050, 1100, 1200, 1300, 1500)
"""Iterations at which the tracking runs are scored (multiples of the free-check interval)."""


def free_recipe(fraction: float, unit: str, *, stop: bool, patience: int, interval: int) -> Recipe:
    """``seed_recipe()`` with ``fraction`` held out; ``stop`` False: track only (no patience, no restore)."""
    free = FreeDataOptions(fraction=fraction, unit=unit, check_interval=interval,  # type: ignore[arg-type]
                           patience=patience if stop else None, restore_best=stop)
    return dataclasses.replace(seed_recipe(), free=free)


def _engine(p: SimProblem, recipe: Recipe) -> Reconstruction:
    return Reconstruction(p.geometry, p.frames, p.mask, p.stage_xyz_m, p.rocking_offsets_deg,
                          gaussian_p2(p.geometry, INITIAL_PROBE_SIGMA_M), recipe=recipe, probe_na_rad=PROBE_NA_RAD)


def _score(p: SimProblem, r: Reconstruction) -> dict[str, float]:
    res = r.result()
    s = score_reconstruction(p, SEED_LIKE_SAMPLE, res, r.op, r._grid.origin_vox)  # noqa: SLF001 - engine's grid
    return {"iteration": r.iteration, "phase": res.phases[-1] if res.phases else "", "E_rho": s.object_error,
            "phase_rmse_rad": s.phase_rmse_rad, "E_P": s.probe_error, "strain_rmse": s.strain_rmse,
            "layer_step": s.layer_step}


def _free_at(r: Reconstruction, iteration: int) -> tuple[float, float]:
    """(free, work) cost per entry of the check at ``iteration`` (NaN if none)."""
    h = r.result().free
    if h is None or iteration not in h.iterations:
        return float("nan"), float("nan")
    k = len(h.iterations) - 1 - h.iterations[::-1].index(iteration)
    return h.free_costs[k], h.work_costs[k]


def run_tracking(p: SimProblem, recipe: Recipe, name: str, last: int) -> dict[str, object]:
    """Iterate to each checkpoint ≤ ``last``; E_ρ etc. and the free/work cost there."""
    r = _engine(p, recipe)
    rows = []
    t_iter = 0.0
    for it in (c for c in CHECKPOINTS if c <= last):
        t0 = time.perf_counter()
        r.iterate(it - r.iteration)
        t_iter += time.perf_counter() - t0
        row = _score(p, r)
        row["free_cost"], row["work_cost"] = _free_at(r, it)
        rows.append(row)
        print(f"  [{name}] it {it:5d} {row['phase']}: E_rho {row['E_rho']:.4f}, strain RMSE {row['strain_rmse']:.3g}, "
              f"step {row['layer_step']:.3g}, free {row['free_cost']:.5g}, work {row['work_cost']:.5g} "
              f"({t_iter:.0f} s)", flush=True)
    h = r.result().free
    return {"name": name, "rows": rows, "iterate_s": t_iter,
            "history": None if h is None else dataclasses.asdict(h), "truth_cost": truth_amplitude_cost(
                p, r.op, r.result(), r._grid.origin_vox)}  # noqa: SLF001


def run_stopped(p: SimProblem, recipe: Recipe, name: str) -> dict[str, object]:
    """Run the recipe until done or stopped; score at the end of the ePIE phase and at the end."""
    r = _engine(p, recipe)
    rows = []
    t0 = time.perf_counter()
    while r.remaining_iterations > 0:
        r.iterate(1)
        res = r.result()
        epie_over = r.remaining_iterations == recipe.n_ml_iterations and res.phases[-1] == "epie"
        if epie_over or r.remaining_iterations == 0:
            rows.append(_score(p, r))
            print(f"  [{name}] after it {r.iteration} ({res.phases[-1]}): {rows[-1]}; free "
                  f"{res.free.best_free_cost:.5g} best at {res.free.best_iteration}, stopped "
                  f"{res.free.stopped_phases}, restored {res.free.restored_phases} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    h = r.result().free
    return {"name": name, "rows": rows, "iterate_s": time.perf_counter() - t0,
            "history": None if h is None else dataclasses.asdict(h)}


def run_noise_control(peak_photons: float, fraction: float, *, noise_seed: int = 7) -> dict[str, object]:
    """Engine-model data with Poisson noise only: E_ρ, free and work cost every 10 iterations."""
    from testing.bragg_problem import band_limit, engine_inputs, make_problem, object_error, well_lit_region

    p = make_problem(upsampling=1, n_side=3, seed=4)
    kw = engine_inputs(p, with_object_shape=True)
    kw["frames"] = np.random.default_rng(noise_seed).poisson(
        kw["frames"] * (peak_photons / kw["frames"].max())).astype(np.float32)
    sched = dataclasses.replace(seed_recipe().support, thickness_schedule_m=((0, 0.55e-6),),
                                shrinkwrap_start_iter=None)
    base = Recipe(n_epie_iterations=400, n_ml_iterations=400, support=sched, background_init=0.0,
                  free=FreeDataOptions(fraction=fraction, check_interval=10, patience=None, restore_best=False))
    rec = dataclasses.replace(base, epie=dataclasses.replace(base.epie, update_probe=False, gamma=0.0),
                              ml=dataclasses.replace(base.ml, update_probe=False))
    r = Reconstruction(**kw, recipe=rec)
    region, truth = well_lit_region(p), band_limit(p, p.true_object)
    rows = []
    for it in range(10, rec.n_iterations + 1, 10):
        r.iterate(it - r.iteration)
        free, work = _free_at(r, it)
        rows.append({"iteration": it, "E_rho": object_error(band_limit(p, r.state.object), truth, region),
                     "free_cost": free, "work_cost": work})
    e = [row["E_rho"] for row in rows]
    f = [row["free_cost"] for row in rows]
    name = f"noise-control peak {peak_photons:g}"
    print(f"  [{name}] {float(kw['frames'].sum(axis=(1, 2, 3)).mean()):.0f} photons/position; E_rho min "
          f"{min(e):.4f} at {rows[int(np.argmin(e))]['iteration']}, free min {min(f):.4g} at "
          f"{rows[int(np.argmin(f))]['iteration']}", flush=True)
    for row in rows:
        if row["iteration"] in (10, 50, 100, 200, 400, 500, 600, 800):
            print(f"  [{name}] it {row['iteration']}: E_rho {row['E_rho']:.4f}, free {row['free_cost']:.4g}, "
                  f"work {row['work_cost']:.4g}", flush=True)
    return {"name": name, "rows": rows}


def main() -> None:
    """Run the selected variants; print per-checkpoint E_ρ and free cost."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["none", "track-entry", "stop-entry"])
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--interval", type=int, default=10)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--reference-sweeps", type=int, default=150)
    ap.add_argument("--last", type=int, default=1500, help="last checkpoint of the tracking runs")
    ap.add_argument("--control-peaks", type=float, nargs="+", default=[20.0, 200.0, 2000.0])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    p = seed_like_problem(noise_seed=1)
    out = []
    for v in a.variants:
        print(v, flush=True)
        if v == "noise-control":
            out.extend(run_noise_control(pk, a.fraction) for pk in a.control_peaks)
            continue
        if v == "none":
            out.append(run_tracking(p, seed_recipe(), v, a.reference_sweeps))
            continue
        kind, unit = v.split("-")
        rec = free_recipe(a.fraction, unit, stop=kind == "stop", patience=a.patience, interval=a.interval)
        out.append(run_tracking(p, rec, v, a.last) if kind == "track" else run_stopped(p, rec, v))
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1, default=lambda o: float(o) if isinstance(o, np.floating) else str(o))


if __name__ == "__main__":
    main()
