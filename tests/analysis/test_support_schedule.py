"""Support schedule as an input: kind "none", smoothed shrink-wrap, "never", the sampling check's T and its override,
a fixed probe at U > 1 (issue 14, point 1)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from analysis.bragg.engine import (
    Recipe,
    Reconstruction,
    SupportSchedule,
    UndersampledWarning,
    scaled_recipe,
    seed_recipe,
    with_fixed_probe,
)
from analysis.bragg.solvers.smoothness import illumination_maps
from analysis.bragg.solvers.support import shrink_wrap, slab_normal, slab_tilts_deg, smoothed_amplitude
from testing.bragg_problem import engine_inputs, make_problem


@pytest.fixture(scope="module")
def problem():
    return make_problem(upsampling=1, n_side=3, seed=4)


def _recipe(**support) -> Recipe:
    sched = SupportSchedule(thickness_schedule_m=((0, 0.55e-6),), shrinkwrap_start_iter=None, **support)
    return Recipe(n_epie_iterations=3, n_ml_iterations=1, support=sched, background_init=0.0)


def test_support_none_is_the_grid_or_the_illuminated_region(problem):
    """Kind "none": S is the whole object grid, or [Σ_j|P_j|² ≥ f·max] of the initial probe; never a slab."""
    kw = engine_inputs(problem)
    rec = Reconstruction(**kw, recipe=_recipe(kind="none"))
    assert rec.state.support.all() and rec.state.support.shape == rec.op.object_shape
    rec.iterate(3)
    assert rec.state.support.all()                               # no slab step ever comes back
    lit = Reconstruction(**kw, recipe=_recipe(kind="none", illumination_fraction=0.1))
    w = np.asarray(illumination_maps(np.asarray(kw["probe"]), lit.data, lit.op, lit.op.object_shape)[0])
    np.testing.assert_array_equal(lit.state.support, w >= 0.1 * w.max())
    assert 0 < lit.state.support.sum() < lit.state.support.size
    slab = Reconstruction(**kw, recipe=_recipe())
    assert not np.array_equal(slab.state.support, lit.state.support) and not slab.state.support.all()
    with pytest.raises(ValueError, match="kind must be 'slab' or 'none'"):
        SupportSchedule(kind="disk")


def test_shrinkwrap_never_is_explicit_and_survives_scaling():
    """``shrinkwrap_start_iter=None``: no sweep is due, and scaled_recipe keeps it None (an int like 10**6
    would scale down into the run)."""
    s = SupportSchedule(shrinkwrap_start_iter=None)
    assert not any(s.shrinkwrap_due(i) for i in range(2000)) and s.support_fixed_before(10 ** 9)
    r = scaled_recipe(dataclasses.replace(seed_recipe(), support=s), n_epie_iterations=50)
    assert r.support.shrinkwrap_start_iter is None
    seed = scaled_recipe(seed_recipe(), n_epie_iterations=200)
    assert [i for i in range(200) if seed.support.shrinkwrap_due(i)] == list(range(60, 101))
    old_style = dataclasses.replace(seed_recipe(), support=SupportSchedule(shrinkwrap_start_iter=10 ** 6))
    assert not any(old_style.support.shrinkwrap_due(i) for i in range(old_style.n_epie_iterations))
    assert scaled_recipe(old_style, n_epie_iterations=50).support.shrinkwrap_start_iter is None  # still never


def test_smoothed_shrink_wrap_drops_single_voxel_spikes():
    """σ > 0: shrink-wrap thresholds the Gaussian-smoothed |ρ|, so an isolated spike above the threshold goes
    while the crystal block stays; σ = 0 is the seed's rule (the spike stays)."""
    rho = np.zeros((20, 20, 20), complex)
    rho[5:15, 5:15, 5:15] = 1.0
    rho[2, 2, 2] = 0.6                                           # one noisy voxel outside the crystal
    support = np.ones(rho.shape, bool)
    plain = shrink_wrap(smoothed_amplitude(rho, 0.0), support, 0.15)
    smooth = shrink_wrap(smoothed_amplitude(rho, 1.5), support, 0.15)
    assert plain[2, 2, 2] and not smooth[2, 2, 2]
    assert smooth[6:14, 6:14, 6:14].all() and not smooth[0].any()
    np.testing.assert_array_equal(smoothed_amplitude(rho, 0.0), np.abs(rho))
    with pytest.raises(ValueError, match="shrinkwrap_sigma_vox"):
        SupportSchedule(shrinkwrap_sigma_vox=-1.0)


def test_engine_shrink_wrap_uses_the_smoothing(problem):
    """The engine's shrink-wrap step goes through the smoothed amplitude: σ changes the support it leaves."""
    kw = engine_inputs(problem)
    out = {}
    for sigma in (0.0, 2.0):
        sched = SupportSchedule(thickness_schedule_m=((0, 0.55e-6),), shrinkwrap_start_iter=2, shrinkwrap_stop_iter=2,
                                shrinkwrap_every=1, shrinkwrap_threshold=0.3, shrinkwrap_sigma_vox=sigma)
        rec = Reconstruction(**kw, recipe=Recipe(n_epie_iterations=3, n_ml_iterations=0, support=sched,
                                                 background_init=0.0))
        rec.iterate(3)
        out[sigma] = rec.state.support.copy()
    assert not np.array_equal(out[0.0], out[2.0])


def test_sampling_check_uses_the_sample_thickness_and_can_be_overridden(problem):
    """T of Eq 12 is ``sampling_thickness_m`` (the sample's), not the widest slab; a failing check names the
    override, and ``allow_undersampled`` turns it into a warning."""
    kw = engine_inputs(problem)
    g = problem.geometry
    w = 0.5 * (g.probe_width_limit_m(0.1e-6) + g.probe_width_limit_m(0.9e-6))   # fits 0.1 µm, not 0.9 µm
    seed_support = seed_recipe().support                                         # slab up to 0.9 µm
    recipe = Recipe(n_epie_iterations=1, n_ml_iterations=0, support=seed_support, background_init=0.0)
    with pytest.raises(ValueError, match="T = 0.900 µm") as exc:
        Reconstruction(**kw, recipe=recipe, probe_width_m=w)
    assert "--allow-undersampled" in str(exc.value)
    thin = dataclasses.replace(recipe, sampling_thickness_m=0.1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Reconstruction(**kw, recipe=thin, probe_width_m=w).sampling_warning is None
    loose = dataclasses.replace(recipe, allow_undersampled=True)
    with pytest.warns(UndersampledWarning, match="going on"):
        rec = Reconstruction(**kw, recipe=loose, probe_width_m=w)
    assert "T = 0.900 µm" in rec.sampling_warning
    with pytest.raises(ValueError, match="sampling_thickness_m"):
        Recipe(sampling_thickness_m=0.0)


def test_fixed_probe_at_u2_leaves_the_probe_unchanged():
    """``with_fixed_probe`` at U = 2: ePIE and ML never touch P2 (only the global ρ/P scale moves)."""
    p = make_problem(upsampling=2, n_side=3, seed=4)
    kw = engine_inputs(p)
    recipe = with_fixed_probe(dataclasses.replace(_recipe(), epie=dataclasses.replace(
        _recipe().epie, probe_update_start_iter=0)))
    assert recipe.upsampling is None and not recipe.epie.update_probe and not recipe.ml.update_probe
    rec = Reconstruction(**kw, recipe=recipe)
    assert rec.geometry.upsampling == 2
    start = np.asarray(rec.state.probe).copy()
    rec.iterate(4)
    end = np.asarray(rec.result().probe)
    corr = abs(np.vdot(start, end)) / (np.linalg.norm(start) * np.linalg.norm(end))
    assert corr > 1 - 1e-6
    joint = Reconstruction(**kw, recipe=dataclasses.replace(recipe, epie=dataclasses.replace(
        recipe.epie, update_probe=True), ml=dataclasses.replace(recipe.ml, update_probe=True)))
    joint.iterate(4)
    moved = np.asarray(joint.result().probe)
    assert abs(np.vdot(start, moved)) / (np.linalg.norm(start) * np.linalg.norm(moved)) < 1 - 1e-4


def test_slab_tilts_from_a_normal():
    """/sample surface_normal_lab → the slab tilts whose normal it is (either sign)."""
    for tilt in ((5.5, -2.0), (0.0, 0.0), (-12.0, 20.0)):
        np.testing.assert_allclose(slab_tilts_deg(slab_normal(*tilt)), tilt, atol=1e-12)
        np.testing.assert_allclose(slab_tilts_deg(-3 * slab_normal(*tilt)), tilt, atol=1e-12)
    with pytest.raises(ValueError, match="non-zero z"):
        slab_tilts_deg((1.0, 0.0, 0.0))


def test_new_support_options_run_on_the_cupy_stand_in(problem, monkeypatch):
    """The illuminated region and the smoothed shrink-wrap keep to CuPy's host/device rules and give the NumPy
    path's support (testing/fake_cupy.py)."""
    from testing import fake_cupy

    monkeypatch.setenv("PXM_CPU_KERNELS", "0")
    cp, _ = fake_cupy.install(monkeypatch)
    kw = engine_inputs(problem)
    sched = SupportSchedule(kind="none", illumination_fraction=0.05, shrinkwrap_start_iter=2, shrinkwrap_stop_iter=2,
                            shrinkwrap_every=1, shrinkwrap_threshold=0.3, shrinkwrap_sigma_vox=1.0)
    recipe = Recipe(n_epie_iterations=3, n_ml_iterations=0, support=sched, background_init=0.0)
    supports = []
    for xp in (np, cp):
        rec = Reconstruction(**kw, recipe=recipe, xp=xp)
        rec.iterate(3)
        supports.append(np.asarray(rec.result().support))
    np.testing.assert_array_equal(supports[0], supports[1])
    assert 0 < supports[0].sum() < supports[0].size
