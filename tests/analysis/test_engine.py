"""Engine: recipe defaults, input validation before any iteration, an online run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.bragg.engine import (
    Recipe,
    Reconstruction,
    SupportSchedule,
    fixed_probe_baseline,
    seed_recipe,
)
from analysis.bragg.solvers import EpieOptions, MLOptions
from testing.bragg_problem import engine_inputs, make_problem


def test_seed_recipe_defaults():
    r = seed_recipe()
    assert (r.n_epie_iterations, r.n_ml_iterations) == (1000, 500)
    e = r.epie
    assert (e.alpha, e.beta, e.gamma, e.mu, e.probe_update_start_iter, e.na_mask_stop_iter) == (
        1.0, 0.5, 0.1, 0.02, 5, 1000)
    assert r.na_factor == 1.5 and r.background_init == 0.1
    s = r.support
    assert [s.thickness_m(i) for i in (0, 99, 100, 199, 200, 900)] == [0.5e-6, 0.5e-6, 0.7e-6, 0.7e-6, 0.9e-6, 0.9e-6]
    assert [i for i in range(600) if s.shrinkwrap_due(i)] == list(range(300, 501, 5))
    assert s.shrinkwrap_threshold == 0.15 and r.ml.noise_model == "amplitude"
    b = fixed_probe_baseline()
    assert b.upsampling == 1 and not b.epie.update_probe and not b.ml.update_probe


@pytest.mark.parametrize("bad", [dict(alpha=1.5), dict(beta=-0.1), dict(mu=-1.0), dict(gamma=2.0)])
def test_epie_options_validate(bad):
    with pytest.raises(ValueError):
        EpieOptions(**bad)


def test_other_options_validate():
    with pytest.raises(ValueError):
        MLOptions(noise_model="gauss")
    with pytest.raises(ValueError):
        SupportSchedule(thickness_schedule_m=((5, 1e-6),))
    with pytest.raises(ValueError):
        Recipe(n_epie_iterations=-1)


@pytest.fixture(scope="module")
def problem():
    return make_problem(upsampling=1, n_side=3, seed=4)


def _inputs(p):
    return engine_inputs(p)


def _recipe():
    sched = SupportSchedule(thickness_schedule_m=((0, 0.55e-6),), shrinkwrap_start_iter=None)
    return Recipe(n_epie_iterations=4, n_ml_iterations=2, support=sched, background_init=0.0)


@pytest.mark.parametrize("case", ["frames_shape", "nan", "negative", "positions", "geometry", "sampling",
                                  "probe_shape", "mask_shape", "offsets"])
def test_validation_before_iteration(problem, case):
    kw = _inputs(problem)
    extra = {}
    match = {"frames_shape": "frames: shape", "nan": "NaN", "negative": "negative", "positions": "object grid",
             "geometry": "BraggGeometry", "sampling": "sampling condition", "probe_shape": "probe: shape",
             "mask_shape": "mask: shape", "offsets": "rocking_offsets_deg"}[case]
    if case == "frames_shape":
        kw["frames"] = kw["frames"][:, :, :-1]
    elif case == "nan":
        kw["frames"] = kw["frames"].copy()
        kw["frames"][0, 0, 0, 0] = np.nan
    elif case == "negative":
        kw["frames"] = kw["frames"] - 1.0
    elif case == "positions":
        extra["object_shape"] = problem.op.box_shape
    elif case == "geometry":
        kw["geometry"] = None
    elif case == "sampling":
        extra["probe_width_m"] = 50e-6
    elif case == "probe_shape":
        kw["probe"] = kw["probe"][:, :-1]
    elif case == "mask_shape":
        kw["mask"] = kw["mask"][:, :-1]
    elif case == "offsets":
        kw["rocking_offsets_deg"] = kw["rocking_offsets_deg"] * 3
    with pytest.raises(ValueError, match=match):
        Reconstruction(**kw, recipe=_recipe(), **extra)


def test_online_reconstruction_runs_and_appends(problem):
    kw = _inputs(problem)
    n0 = 5
    first = {k: (v[:n0] if k in ("frames", "stage_xyz_m") else v) for k, v in kw.items()}
    rec = Reconstruction(**first, recipe=_recipe(), object_shape=problem.op.object_shape,
                         dtype=np.complex128)
    rec.iterate(2)
    rec.add_frames(kw["frames"][n0:], kw["stage_xyz_m"][n0:])
    assert rec.data.n_positions == kw["frames"].shape[0]
    with pytest.raises(ValueError, match="object grid"):
        rec.add_frames(kw["frames"][:1], kw["stage_xyz_m"][:1] + 5e-6)
    rec.iterate(4)
    res = rec.result()
    assert res.iterations == 6 and res.phases == ("epie",) * 4 + ("ml",) * 2
    assert len(res.costs) == len(res.timings_s) == 6
    assert res.costs[3] < res.costs[0]
    assert res.background.shape == (problem.geometry.n_angles, problem.geometry.n_rows_px,
                                    problem.geometry.n_cols_px)
    assert res.probe.shape == problem.true_probe.shape and np.all(np.isfinite(res.object))
    assert res.recipe["epie"]["beta"] == 0.5


def test_initial_scale_matched_to_the_data(problem):
    """A probe off by 10⁶ in amplitude is rescaled so Σω|Ψ|² = Σω I before the first sweep,
    and the safeguarded ML line search never raises the cost."""
    kw = _inputs(problem)
    kw["probe"] = kw["probe"] * 1e6
    rec = Reconstruction(**kw, recipe=_recipe())
    d, op, st = rec.data, rec.op, rec.state
    pred = sum(float(np.sum(np.abs(op.fourier.forward(op.probe_at(st.probe, d.shifts_px[j])
                                                      * st.object[op.view(d.offsets_vox[j])])) ** 2 * d.mask))
               for j in range(d.n_positions))
    meas = float(np.sum(d.intensities * d.mask[None]))
    assert abs(pred / meas - 1) < 1e-3
    rec.iterate(6)
    ml_costs = [c for c, ph in zip(rec.result().costs, rec.result().phases, strict=True) if ph == "ml"]
    assert rec.result().costs[0] < 1.0 and ml_costs[1] <= ml_costs[0]


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_engine_leaves_the_callers_probe_unchanged(problem, dtype):
    """The initial P2 is copied: a probe already in the engine's dtype was rescaled and updated in place,
    so a second engine built from the same array started from the first one's result."""
    kw = _inputs(problem)
    kw["probe"] = np.asarray(kw["probe"], dtype) * 1e3
    given = kw["probe"].copy()
    recipe = dataclasses.replace(_recipe(), epie=EpieOptions(probe_update_start_iter=0))
    costs = []
    for _ in range(2):
        rec = Reconstruction(**kw, recipe=recipe, dtype=dtype)
        rec.iterate(3)
        costs.append(rec.result().costs)
    assert np.array_equal(kw["probe"], given)
    assert costs[0] == costs[1]
