"""Quality and placement of an engine run: R-factor per phase, object placement, the shrink-wrap floor."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.bragg.engine import FreeDataOptions, Recipe, Reconstruction, SupportSchedule
from analysis.bragg.operators import object_placement, positions_to_voxels
from analysis.bragg.solvers.support import shrinkwrap_floor
from analysis.metrics import r_factor
from testing.bragg_problem import engine_inputs, make_problem


@pytest.fixture(scope="module")
def problem():
    return make_problem(upsampling=1, n_side=3, seed=4)


def _recipe(**kw):
    sched = SupportSchedule(thickness_schedule_m=((0, 0.55e-6),), shrinkwrap_start_iter=None)
    return Recipe(n_epie_iterations=3, n_ml_iterations=2, support=sched, background_init=0.0, **kw)


def _independent_r(rec: Reconstruction) -> float:
    """R from the state by :func:`analysis.metrics.r_factor` on the modelled intensities |Ψ_j|² + b."""
    d, op, st = rec.data, rec.op, rec.state
    meas, pred = [], []
    for j in range(d.n_positions):
        psi = op.fourier.forward(op.probe_at(st.probe, d.shifts_px[j]) * st.object[op.view(d.offsets_vox[j])])
        meas.append(d.intensities[j])
        pred.append(np.abs(psi) ** 2 + st.background)
    return r_factor(np.stack(meas), np.stack(pred), mask=d.mask[None])


def test_r_factor_is_zero_for_the_truth_and_one_for_a_zero_object(problem):
    """On noise-free data of the engine's own model, the true ρ and P2 fit exactly; ρ = 0 predicts nothing."""
    rec = Reconstruction(**engine_inputs(problem), recipe=_recipe(), margin_vox=1, dtype=np.complex128)
    assert rec.op.object_shape == problem.op.object_shape          # the problem's grid (margin 1)
    rec.state.object = problem.true_object.copy()
    rec.state.probe = problem.true_probe.copy()
    rec.state.background[:] = 0.0
    assert rec.r_factor() < 1e-6
    rec.state.object[:] = 0.0
    assert rec.r_factor() == pytest.approx(1.0, abs=1e-12)


def test_r_factor_recorded_at_the_start_and_each_phase_end(problem):
    rec = Reconstruction(**engine_inputs(problem), recipe=_recipe(), dtype=np.complex128)
    r0 = _independent_r(rec)
    rec.iterate(3)                                                   # the whole ePIE phase
    r_epie = _independent_r(rec)
    assert rec.phase_r_factors == pytest.approx({"initial": r0, "epie": r_epie}, rel=1e-9)
    rec.iterate(2)
    res = rec.result()
    assert set(res.r_factors) == {"initial", "epie", "ml"} and res.free_r_factors == {}
    assert res.r_factors["ml"] == pytest.approx(_independent_r(rec), rel=1e-9)
    assert res.r_factors["ml"] < res.r_factors["epie"] < res.r_factors["initial"]


def test_free_r_factor_on_held_out_entries(problem):
    recipe = _recipe(free=FreeDataOptions(fraction=0.1, patience=None))
    rec = Reconstruction(**engine_inputs(problem), recipe=recipe, dtype=np.complex128)
    rec.iterate(5)
    res = rec.result()
    assert set(res.free_r_factors) == {"initial", "epie", "ml"}
    assert all(0.0 < v < 1.5 for v in res.free_r_factors.values())
    assert res.free_r_factors["ml"] != pytest.approx(res.r_factors["ml"], rel=1e-6)


def test_placement_puts_the_truth_where_the_data_say(problem):
    """The engine's grid (margin 2) differs from the problem's (margin 1) by a voxel per axis. Moving the true
    ρ onto it by the placements reproduces the data (R ≈ 0); the same ρ one voxel off along e2 does not."""
    rec = Reconstruction(**engine_inputs(problem), recipe=_recipe(), dtype=np.complex128)
    pl = rec.result().placement
    truth_pl = object_placement(problem.geometry, problem.centre_vox)
    shape = rec.op.object_shape
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    src = truth_pl.index_vox(pl.position_m(idx))                     # engine voxel → problem-grid index
    np.testing.assert_allclose(src, np.rint(src), atol=1e-9)
    src = np.rint(src).astype(int)

    def placed(shift_e2: int) -> np.ndarray:
        s = src + np.array([0, shift_e2, 0])
        inside = np.all((s >= 0) & (s < np.array(problem.true_object.shape)), axis=-1)
        out = np.zeros(shape, complex)
        out[inside] = problem.true_object[tuple(s[inside].T)]
        return out

    rec.state.probe = problem.true_probe.copy()
    rec.state.background[:] = 0.0
    rec.state.object = placed(0)
    assert rec.r_factor() < 1e-6
    rec.state.object = placed(1)
    assert rec.r_factor() > 0.2
    # the probe centre at stage position s is on voxel positions_to_voxels(s) + origin_vox, at lab −s
    nu = positions_to_voxels(problem.geometry, problem.stage_xyz_m) + rec.result().origin_vox
    np.testing.assert_allclose(pl.position_m(nu), -problem.stage_xyz_m, atol=1e-15)
    np.testing.assert_allclose(pl.axes_lab @ pl.axes_lab.T, np.eye(3), atol=1e-12)


def test_shrink_wrap_in_the_engine_keeps_the_floor(problem):
    """A threshold of 0.999 would leave a voxel or two of the slab; the engine keeps max(27, ¼ slab)."""
    sched = SupportSchedule(thickness_schedule_m=((0, 0.55e-6),), shrinkwrap_start_iter=1, shrinkwrap_stop_iter=2,
                            shrinkwrap_every=1, shrinkwrap_threshold=0.999)
    rec = Reconstruction(**engine_inputs(problem), recipe=dataclasses.replace(_recipe(), support=sched),
                         dtype=np.complex128)
    slab = rec.state.support.copy()
    rec.iterate(3)
    kept = rec.result().support
    assert not np.any(kept & ~slab)
    assert int(kept.sum()) >= shrinkwrap_floor(slab) == int(np.ceil(0.25 * slab.sum()))
    assert int(kept.sum()) < int(slab.sum())
    assert np.isfinite(rec.r_factor())
