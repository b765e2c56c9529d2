"""Held-out ("free") data: selection, isolation from every update, the free cost, the patience rule.

Whether the free cost detects over-fitting on simulator data is a benchmark measurement
(``benchmarks/bench_free_data.py``, docs/seed-schedule.md, 2026-12-04), not asserted here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.bragg.engine import FreeDataOptions, Recipe, Reconstruction, SupportSchedule
from analysis.bragg.solvers import free as free_mod
from analysis.bragg.solvers import ml
from analysis.bragg.solvers.model import BraggData
from analysis.bragg.solvers.options import Execution, MLOptions
from testing.bragg_problem import engine_inputs, make_problem


@pytest.fixture(scope="module")
def problem():
    return make_problem(upsampling=1, n_side=3, seed=4)


def _recipe(unit: str = "entry", *, patience: int | None = None, restore: bool = False,
            n_epie: int = 4, n_ml: int = 2, interval: int = 2) -> Recipe:
    sched = SupportSchedule(thickness_schedule_m=((0, 0.55e-6),), shrinkwrap_start_iter=None)
    return Recipe(n_epie_iterations=n_epie, n_ml_iterations=n_ml, support=sched, background_init=0.0,
                  free=FreeDataOptions(fraction=0.1, unit=unit, seed=3, check_interval=interval, patience=patience,
                                       restore_best=restore))


@pytest.mark.parametrize("bad", [dict(fraction=0.5), dict(fraction=-0.01), dict(check_interval=0),
                                 dict(patience=0), dict(unit="pixel"), dict(stop_phases=("epie", "both"))])
def test_free_options_validate(bad):
    with pytest.raises(ValueError, match="FreeDataOptions"):
        FreeDataOptions(**bad)


def test_selection_is_random_spread_and_disjoint(problem):
    r = Reconstruction(**engine_inputs(problem), recipe=_recipe())
    mask = np.asarray(r.all_data.mask)
    work = np.stack([r.data.mask_at(j) for j in range(r.data.n_positions)])
    held = np.stack([r.held_out_data.mask_at(j) for j in range(r.data.n_positions)])
    assert not np.any(work & held) and np.array_equal(work | held, np.broadcast_to(mask, work.shape))
    frac = held.sum() / mask.sum() / held.shape[0]
    assert abs(frac - 0.1) < 0.01
    per_plane = held.sum(axis=(0, 1, 2)) / np.broadcast_to(mask, held.shape).sum(axis=(0, 1, 2))
    assert per_plane.min() > 0.05 and per_plane.max() < 0.15          # every rocking plane, none structured
    # the documented rule: position j draws from default_rng((seed, j))
    want = np.random.default_rng((3, 1)).random(mask.shape) < 0.1
    assert np.array_equal(held[1], want & mask)
    # a rank (or positions added later) draws the same rows as the whole scan
    opts = _recipe().free
    some = free_mod.held_out_rows(np.array([1, 3]), mask.shape, opts)
    assert np.array_equal(some, free_mod.held_out_rows(np.arange(4), mask.shape, opts)[[1, 3]])


@pytest.mark.parametrize("unit,fused", [("entry", True), ("entry", False), ("frame", True)])
def test_held_out_intensities_never_enter_an_update(problem, unit, fused):
    """Changing the counts at the held-out entries changes the free cost only: ρ, P2, b bitwise equal."""
    kw = engine_inputs(problem)
    rec = _recipe(unit)
    ex = Execution(cpu_kernels=fused)
    a = Reconstruction(**kw, recipe=rec, execution=ex)
    held = np.stack([np.asarray(a.held_out_data.mask_at(j)) for j in range(a.data.n_positions)])
    held = np.moveaxis(held, -1, 1)                                    # (POS, ANGLE, N1, N2), user order
    frames = kw["frames"].copy()
    frames[held] = frames[held] * 3.0 + 7.0
    b = Reconstruction(**{**kw, "frames": frames}, recipe=rec, execution=ex)
    for r in (a, b):
        r.iterate(rec.n_iterations)
    ra, rb = a.result(), b.result()
    assert ra.phases == rb.phases and ra.costs == rb.costs
    for name in ("object", "probe", "background", "support"):
        assert np.array_equal(getattr(ra, name), getattr(rb, name)), name
    assert ra.free.work_costs == rb.free.work_costs
    assert all(fb > fa for fa, fb in zip(ra.free.free_costs, rb.free.free_costs, strict=True))


def test_free_cost_equals_an_independent_recomputation(problem):
    rec = _recipe()
    r = Reconstruction(**engine_inputs(problem), recipe=rec)
    r.iterate(rec.n_iterations)
    h = r.result().free
    assert h.iterations == (2, 4, 6) and h.phases == ("epie", "epie", "ml")
    d = r.all_data
    shape = tuple(d.mask.shape)
    sel = np.stack([np.random.default_rng((3, j)).random(shape) < 0.1 for j in range(d.n_positions)])
    only = BraggData(intensities=d.intensities, mask=d.mask, offsets_vox=d.offsets_vox, shifts_px=d.shifts_px,
                     frame_valid=sel)
    total = ml.cost(r.state, only, op=r.op, options=MLOptions(noise_model="amplitude"),
                    weights=np.zeros(d.n_positions))                    # Σ ω (√h − √I)², seed Eq 4 without μ
    n = int(sum(np.count_nonzero(only.mask_at(j)) for j in range(d.n_positions)))
    assert n == h.n_free_entries
    assert h.free_costs[-1] == pytest.approx(total / n, rel=1e-5)


def test_patience_stops_the_phase_and_restores_the_best_state(problem, monkeypatch):
    """Scripted free costs (checks every 2 iterations, patience 2): ePIE's best check is iteration 4 and
    ePIE stops at 8 with ρ/P2/b of iteration 4; ML's best is its 4th iteration, it stops after its 8th
    and ends with that state; nothing runs afterwards."""
    rec = _recipe(patience=2, restore=True, n_epie=20, n_ml=10, interval=2)
    track = Reconstruction(**engine_inputs(problem), recipe=dataclasses.replace(rec, n_ml_iterations=0))
    track.iterate(4)
    best_epie = track.result()
    script = iter([5.0, 3.0, 3.5, 4.0,          # ePIE checks after sweeps 2, 4, 6, 8
                   2.5, 2.0, 2.2, 2.3])          # ML checks after ML iterations 2, 4, 6, 8
    real = free_mod.amplitude_costs

    def fake(state, work, free, op, comm=None):
        s_w, n_w, _, n_f = real(state, work, free, op, comm)
        return s_w, n_w, next(script) * n_f, n_f

    monkeypatch.setattr(free_mod, "amplitude_costs", fake)
    r = Reconstruction(**engine_inputs(problem), recipe=rec)
    results = []
    while r.remaining_iterations > 0:
        r.iterate(1)
        results.append(r.result())
    h = r.result().free
    assert h.stopped_phases == ("epie", "ml") and h.restored_phases == ("epie", "ml")
    assert h.iterations == (2, 4, 6, 8, 10, 12, 14, 16) and h.best_iteration == 12 and h.best_free_cost == 2.0
    assert r.result().phases.count("epie") == 8 and r.result().phases.count("ml") == 8
    after_epie = results[7]                                     # the state ML starts from
    assert np.array_equal(after_epie.object, best_epie.object) and np.array_equal(after_epie.probe, best_epie.probe)
    assert np.array_equal(r.result().object, results[11].object)  # after ML iteration 4
    assert r.iterate(5).iteration == 16 and r.remaining_iterations == 0
