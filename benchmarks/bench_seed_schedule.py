"""The seed's whole schedule (seed Methods; docs/seed-schedule.md), unscaled, on simulator data — against the scaled
one.

Problem: :func:`testing.bragg_sim.seed_like_problem` (the one of
``tests/system/test_seed_schedule_sim.py``): 0.45 µm W(220) slab tilted 5.5°/−2°, 3e-4 implanted layer,
32² ROI × 24 angles, 16 positions, Poisson (1e9 ph/s × 0.2 s, seed 1); probe retrieved jointly from a
σ = 60 nm flat-phase Gaussian; NA mask 1.5 × (6e-4, 6e-4); b = 0.1, γ = 0.1, μ = 0.02, α = 1, β = 0.5.

Variants (``--variants``):

* ``seed``: :func:`analysis.bragg.engine.seed_recipe` — 1000 ePIE sweeps (slab 0.5/0.7/0.9 µm from sweeps
  0/100/200, shrink-wrap 15 % every 5 sweeps in 300–500, probe frozen for 5 sweeps, NA mask until
  1000) + 500 ML (Gaussian);
* ``scaled``: ``scaled_recipe(seed_recipe(), n_epie_iterations=60, n_ml_iterations=20)`` (the test);
* ``fixed-scaled`` / ``fixed-full``: the same two with the support fixed at the 0.5 µm slab
  (no widening, no shrink-wrap).

At every checkpoint (the seed's breakpoints 100/200/300/400/500/1000/1500, scaled with the recipe)
the run is scored against the simulator truth with
:func:`testing.bragg_sim.score_reconstruction` (E_ρ on the lit crystal, phase RMSE, E_P,
strain RMSE, implanted-layer step); scoring time is not counted in the timings.
Run: ``PYTHONPATH=. nice -n 19 .venv/bin/python benchmarks/bench_seed_schedule.py [--variants seed scaled]
[--n-ml N] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass

import numpy as np

from analysis.bragg.engine import MLOptions, Recipe, Reconstruction, scaled_recipe, seed_recipe
from analysis.bragg.solvers import ml
from testing.bragg_sim import (
    SEED_LIKE_SAMPLE,
    ReconstructionScores,
    SimProblem,
    gaussian_p2,
    score_reconstruction,
    seed_like_problem,
    truth_amplitude_cost,
)

SEED_CHECKPOINTS = (5, 25, 50, 100, 150, 200, 250, 300, 400, 500, 750, 1000)
"""ePIE checkpoints of the unscaled schedule (seed breakpoints 100/200/300/500/1000 and points between)."""
ML_CHECKPOINT_FRACTIONS = (0.02, 0.1, 0.2, 0.4, 0.6, 1.0)
"""ML checkpoints as fractions of the ML iterations."""
PROBE_NA_RAD = (6e-4, 6e-4)
"""NA of the simulated KB probe (V, H), for the 1.5 × NA mask."""
INITIAL_PROBE_SIGMA_M = 60e-9
"""σ of the flat-phase Gaussian start of the joint probe."""
JIT_WARMUP_SWEEPS = 3
"""Sweeps left out of the per-sweep median (Numba compilation, FFTW planning)."""


def fixed_slab(recipe: Recipe, thickness_m: float = 0.5e-6) -> Recipe:
    """``recipe`` with the support fixed at one slab thickness: no widening, no shrink-wrap."""
    return dataclasses.replace(recipe, support=dataclasses.replace(
        recipe.support, thickness_schedule_m=((0, thickness_m),), shrinkwrap_start_iter=None))


def variant_recipes(n_ml_full: int = 500) -> dict[str, Recipe]:
    """The compared recipes by name (``n_ml_full`` ML iterations for the unscaled ones)."""
    full = dataclasses.replace(seed_recipe(), n_ml_iterations=n_ml_full)
    scaled = scaled_recipe(seed_recipe(), n_epie_iterations=60, n_ml_iterations=20)
    return {"seed": full, "scaled": scaled, "fixed-scaled": fixed_slab(scaled), "fixed-full": fixed_slab(full)}


def scaled_checkpoints(recipe: Recipe) -> tuple[int, ...]:
    """:data:`SEED_CHECKPOINTS` × n_epie/1000 plus :data:`ML_CHECKPOINT_FRACTIONS` of the ML phase."""
    f = recipe.n_epie_iterations / 1000
    its = {max(1, int(round(f * c))) for c in SEED_CHECKPOINTS if c <= 1000}
    its.add(recipe.n_epie_iterations)
    its.update(recipe.n_epie_iterations + max(1, int(round(fr * recipe.n_ml_iterations)))
               for fr in ML_CHECKPOINT_FRACTIONS if recipe.n_ml_iterations > 0)
    return tuple(sorted(i for i in its if 0 < i <= recipe.n_iterations))


@dataclass(frozen=True)
class Checkpoint:
    """Scores and cost after ``iteration`` iterations."""

    iteration: int
    phase: str
    cost: float
    amplitude_cost: float
    """Amplitude-Gaussian data cost Σ(√(|Ψ|² + b) − √I)² of the current ρ, P2, b (seed Eq 4 without μ)."""
    scores: ReconstructionScores


@dataclass(frozen=True)
class RunReport:
    """One reconstruction of the problem, checkpoint by checkpoint, with timings."""

    name: str
    n_epie_iterations: int
    n_ml_iterations: int
    initial_probe: str
    checkpoints: tuple[Checkpoint, ...]
    epie_sweep_median_s: float
    ml_iteration_median_s: float
    total_iterate_s: float
    cost_summary: dict[str, float]
    truth_amplitude_cost: float
    """The same data cost for the true ρ and P through the engine's model (the mismatch floor)."""

    @property
    def final(self) -> ReconstructionScores:
        """Scores at the last checkpoint."""
        return self.checkpoints[-1].scores


def cost_summary(costs: tuple[float, ...], phases: tuple[str, ...]) -> dict[str, float]:
    """First/last/minimum cost of each phase (ePIE: Σ of the per-position amplitude residual; ML: its cost)."""
    out: dict[str, float] = {}
    c = np.asarray(costs, float)
    ph = np.asarray(phases)
    for name in ("epie", "ml"):
        v = c[ph == name]
        if v.size:
            out.update({f"{name}_first": float(v[0]), f"{name}_last": float(v[-1]), f"{name}_min": float(v.min()),
                        f"{name}_argmin": float(np.argmin(v))})
    return out


def run(problem: SimProblem, recipe: Recipe, initial_probe: np.ndarray, *, name: str, initial_probe_label: str,
        checkpoints: tuple[int, ...] | None = None, verbose: bool = True) -> RunReport:
    """Reconstruct ``problem`` with ``recipe`` from ``initial_probe`` (P2) and score it at ``checkpoints``."""
    g = problem.geometry
    r = Reconstruction(g, problem.frames, problem.mask, problem.stage_xyz_m, problem.rocking_offsets_deg,
                       initial_probe, recipe=recipe, probe_na_rad=PROBE_NA_RAD)
    origin = r._grid.origin_vox  # noqa: SLF001 - the engine's own object grid
    no_mu = np.zeros(problem.stage_xyz_m.shape[0])
    truth_cost = truth_amplitude_cost(problem, r.op, r.result(), origin)
    cps = scaled_checkpoints(recipe) if checkpoints is None else checkpoints
    out: list[Checkpoint] = []
    t_iter = 0.0
    for it in cps:
        t0 = time.perf_counter()
        r.iterate(it - r.iteration)
        t_iter += time.perf_counter() - t0
        res = r.result()
        sc = score_reconstruction(problem, SEED_LIKE_SAMPLE, res, r.op, origin)
        amp = ml.cost(r.state, r.data, op=r.op, options=MLOptions(noise_model="amplitude"), weights=no_mu)
        out.append(Checkpoint(iteration=it, phase=res.phases[-1], cost=res.costs[-1], amplitude_cost=amp, scores=sc))
        if verbose:
            print(f"  [{name}] it {it:5d} ({res.phases[-1]}): E_rho {sc.object_error:.4f} phase "
                  f"{sc.phase_rmse_rad:.3f} rad, E_P {sc.probe_error:.4f}, strain RMSE {sc.strain_rmse:.3g}, "
                  f"step {sc.layer_step:.3g}, S {sc.support_voxels}, kept {sc.lit_crystal_kept:.3f}, "
                  f"amplitude cost / truth's {amp / truth_cost:.3f}  ({t_iter:.0f} s)", flush=True)
    res = r.result()
    t = np.asarray(res.timings_s)
    ph = np.asarray(res.phases)
    te, tm = t[ph == "epie"][JIT_WARMUP_SWEEPS:], t[ph == "ml"][1:]
    return RunReport(name=name, n_epie_iterations=recipe.n_epie_iterations, n_ml_iterations=recipe.n_ml_iterations,
                     initial_probe=initial_probe_label, checkpoints=tuple(out),
                     epie_sweep_median_s=float(np.median(te)) if te.size else float("nan"),
                     ml_iteration_median_s=float(np.median(tm)) if tm.size else float("nan"),
                     total_iterate_s=t_iter, cost_summary=cost_summary(res.costs, res.phases),
                     truth_amplitude_cost=truth_cost)


def table(reports: list[RunReport]) -> str:
    """Markdown table: one row per checkpoint of every run."""
    rows = ["| run | iteration | phase | E_ρ | phase RMSE (rad) | E_P | strain RMSE | layer step | \\|S\\| "
            "| lit kept | data cost / truth's |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rep in reports:
        for c in rep.checkpoints:
            s = c.scores
            rows.append(f"| {rep.name} | {c.iteration} | {c.phase} | {s.object_error:.3f} | {s.phase_rmse_rad:.3f} | "
                        f"{s.probe_error:.4f} | {s.strain_rmse:.2e} | {s.layer_step:.2e} | {s.support_voxels} | "
                        f"{s.lit_crystal_kept:.3f} | {c.amplitude_cost / rep.truth_amplitude_cost:.3f} |")
    return "\n".join(rows)


def main() -> None:
    """Run the selected variants and print per-checkpoint scores, timings and cost summaries."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["scaled", "fixed-scaled", "seed", "fixed-full"])
    ap.add_argument("--n-ml", type=int, default=500, help="ML iterations of the unscaled variants (seed: 500)")
    ap.add_argument("--noise-seed", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the reports to this JSON file")
    ap.add_argument("--smoothness", type=float, nargs="+", default=None,
                    help="run every variant once per ML smoothness-prior strength s (MLOptions.smoothness)")
    a = ap.parse_args()
    recipes = variant_recipes(a.n_ml)
    if a.smoothness:
        recipes = {f"{name}-s{sm:g}": dataclasses.replace(r, ml=dataclasses.replace(r.ml, smoothness=sm))
                   for name, r in recipes.items() for sm in a.smoothness}
        a.variants = [f"{name}-s{sm:g}" for name in a.variants for sm in a.smoothness]
    t0 = time.perf_counter()
    p = seed_like_problem(noise_seed=a.noise_seed)
    print(f"frames {p.frames.shape} simulated in {time.perf_counter() - t0:.1f} s; "
          f"mean {p.frames.sum(axis=(1, 2, 3)).mean():.3g} photons per position")
    start = gaussian_p2(p.geometry, INITIAL_PROBE_SIGMA_M)
    reports = []
    for name in a.variants:
        rec = recipes[name]
        print(f"{name}: {rec.n_epie_iterations} ePIE + {rec.n_ml_iterations} ML", flush=True)
        rep = run(p, rec, start, name=name, initial_probe_label=f"gaussian sigma {INITIAL_PROBE_SIGMA_M * 1e9:.0f} nm")
        print(f"  [{name}] ePIE {rep.epie_sweep_median_s * 1e3:.1f} ms/sweep, "
              f"ML {rep.ml_iteration_median_s * 1e3:.1f} ms/iteration, total {rep.total_iterate_s:.1f} s; "
              f"costs {rep.cost_summary}", flush=True)
        reports.append(rep)
    print(table(reports))
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump([dataclasses.asdict(r) for r in reports], fh, indent=1)


if __name__ == "__main__":
    main()
