"""Recipes: named presets, TOML recipe files, the whole schedule scaled, and the sample's defaults (docs/recipes.md)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.bragg.engine import seed_recipe
from analysis.bragg.recipes import (
    PRESETS,
    GivenSupport,
    quick_recipe,
    read_recipe_file,
    recipe_by_name,
    recipe_with,
    resolve_sample,
    schedule_iterations,
)
from analysis.bragg.thickness import ThicknessEstimate

RECIPE_TOML = """
n_epie_iterations = 40
n_ml_iterations = 7
upsampling = 2
allow_undersampled = true

[epie]
beta = 0.3
probe_update_start_iter = 2

[ml]
noise_model = "poisson"
probe_scale = "none"

[support]
kind = "slab"
thickness_schedule_m = [[0, 0.3e-6], [10, 0.4e-6]]
tilt_x_deg = 1.5
shrinkwrap_start_iter = "never"
shrinkwrap_sigma_vox = 1.0

[free]
fraction = 0.05
stop_phases = ["ml"]
"""


def test_presets_are_one_mapping_and_pxm_keeps_its_names():
    from pxm.recipe_args import PRESET_NAMES
    from pxm.reconstruction import RECIPES
    from pxm.reconstruction import recipe_by_name as pxm_recipe_by_name

    assert tuple(PRESETS) == PRESET_NAMES == RECIPES == ("default", "seed", "quick", "baseline", "thin-layer")
    assert pxm_recipe_by_name is recipe_by_name and recipe_by_name("seed") == seed_recipe()
    assert quick_recipe().support.shrinkwrap_start_iter is None
    with pytest.raises(ValueError,
                       match="unknown recipe 'fast'; choose one of default, seed, quick, baseline, thin-layer"):
        recipe_by_name("fast")


def test_default_recipe_is_the_seed_schedule_with_the_ml_prior_and_seed_stays_literal():
    """Point 4: ``pxm reconstruct``'s default adds the ML smoothness prior to the seed's schedule (which alone
    lets ML trade model error for voxel noise: tests/system/test_default_recipe_sim.py); ``--recipe seed`` keeps
    the seed's cost; ``--ml-smoothness 0`` switches the prior off."""
    import dataclasses

    from pxm.cli import build_parser
    from pxm.recipe_args import recipe_from_args

    default, seed = PRESETS["default"](), PRESETS["seed"]()
    assert seed == seed_recipe() and seed.ml.smoothness == 0.0
    assert default.ml.smoothness == 0.01
    assert (default.n_epie_iterations, default.n_ml_iterations) == (200, 100)
    assert dataclasses.replace(default, ml=seed.ml) == recipe_by_name("seed", n_epie_iterations=200)  # nothing else
    longer = recipe_by_name("default", n_epie_iterations=1000)
    assert longer.ml.smoothness == 0.01 and longer.support == seed.support and longer.n_ml_iterations == 500
    args = build_parser().parse_args(["reconstruct", "ds.h5", "-o", "r.h5"])
    assert args.recipe == "default" and args.ml_smoothness is None
    assert recipe_from_args(args)[0].ml.smoothness == 0.01
    off = build_parser().parse_args(["reconstruct", "ds.h5", "-o", "r.h5", "--ml-smoothness", "0"])
    assert off.ml_smoothness == 0.0


def test_iterations_scale_the_whole_schedule():
    """--iterations N: thickness steps, shrink-wrap window, probe start, NA-mask stop and ML scale with N (the old
    recipe_by_name replaced the count only, so 200 sweeps never reached shrink-wrap at 300–500)."""
    r = recipe_by_name("seed", n_epie_iterations=200)
    s = r.support
    assert (r.n_epie_iterations, r.n_ml_iterations) == (200, 100)
    assert s.thickness_schedule_m == ((0, 0.5e-6), (20, 0.7e-6), (40, 0.9e-6))
    assert (s.shrinkwrap_start_iter, s.shrinkwrap_stop_iter, s.shrinkwrap_every) == (60, 100, 1)
    assert (r.epie.probe_update_start_iter, r.epie.na_mask_stop_iter) == (1, 200)
    assert recipe_by_name("seed", n_epie_iterations=200, n_ml_iterations=5).n_ml_iterations == 5
    assert recipe_by_name("seed", n_ml_iterations=3).support == seed_recipe().support
    ml_only = schedule_iterations(seed_recipe(), n_epie_iterations=0, n_ml_iterations=4)
    assert (ml_only.n_epie_iterations, ml_only.n_ml_iterations) == (0, 4)
    with pytest.raises(ValueError, match=">= 0"):
        schedule_iterations(seed_recipe(), n_epie_iterations=-1)


def test_recipe_file_sets_every_table(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE_TOML)
    r = recipe_with(seed_recipe(), read_recipe_file(path), source=str(path))
    assert (r.n_epie_iterations, r.n_ml_iterations, r.upsampling, r.allow_undersampled) == (40, 7, 2, True)
    assert (r.epie.beta, r.epie.probe_update_start_iter, r.epie.alpha) == (0.3, 2, 1.0)    # others stay the seed's
    assert r.ml.noise_model == "poisson" and r.ml.probe_scale is None
    s = r.support
    assert s.thickness_schedule_m == ((0, 0.3e-6), (10, 0.4e-6)) and s.tilt_x_deg == 1.5 and s.tilt_y_deg == -2.0
    assert s.shrinkwrap_start_iter is None and s.shrinkwrap_sigma_vox == 1.0
    assert r.free.fraction == 0.05 and r.free.stop_phases == ("ml",)


@pytest.mark.parametrize("text, message", [
    ("[support]\nthicknes_m = 1e-6\n", "recipe.toml: unknown key 'support.thicknes_m'; [support] takes kind, "),
    ("iterations = 10\n", "recipe.toml: unknown key 'iterations'; the top level takes n_epie_iterations"),
    ("[epie]\nbeta = 'high'\n", "recipe.toml: epie.beta: expected a number, got 'high'"),
    ("[epie]\nbeta = 1.5\n", "recipe.toml: epie: EpieOptions.beta must lie in [0, 1]"),
    ("[support]\nkind = 'disk'\n", "recipe.toml: support.kind: expected 'slab' or 'none', got 'disk'"),
    ("n_epie_iterations = true\n", "recipe.toml: n_epie_iterations: expected an integer, got True"),
    ("sources = ['x']\n", "recipe.toml: unknown key 'sources'"),
    ("epie = 3\n", "recipe.toml: epie: expected a table of options, got 3"),
    ("[epie]\ncpu_fused = false\n", "recipe.toml: 'epie.cpu_fused' is an execution setting, not part of a recipe"),
    ("[ml]\nkeep_exit_waves = false\n", "recipe.toml: 'ml.keep_exit_waves' is an execution setting"),
])
def test_recipe_file_refuses_unknown_keys_and_wrong_types_by_name(tmp_path, text, message):
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as exc:
        recipe_with(seed_recipe(), read_recipe_file(path), source="recipe.toml")
    assert str(exc.value).startswith(message)


def test_recipe_file_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="no such recipe file"):
        read_recipe_file(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[support\n")
    with pytest.raises(ValueError, match="bad.toml: not valid TOML"):
        read_recipe_file(bad)


def _estimate(value: float | None, calls: list | None = None):
    def est(normal):
        if calls is not None:
            calls.append(np.asarray(normal))
        return ThicknessEstimate(thickness_m=value, per_position_m=np.full(4, value or np.nan), percentile=90.0,
                                 reason="" if value else "no crystal signal")
    return est


def test_sample_thickness_and_tilt_size_the_support_and_the_sampling_check():
    """/sample thickness_m and tilts set the slab (the seed's steps scaled to T) and the sampling check's T;
    the data are not consulted; every choice says where it came from."""
    calls: list = []
    sample = {"name": "foil", "thickness_m": 0.2e-6, "tilt_x_deg": 3.0, "tilt_y_deg": -1.0}
    r = resolve_sample(seed_recipe(), recipe_name="seed", sample=sample, estimate=_estimate(0.7e-6, calls))
    s = r.support
    np.testing.assert_allclose([t for _, t in s.thickness_schedule_m], [0.2e-6, 0.28e-6, 0.36e-6])
    assert [i for i, _ in s.thickness_schedule_m] == [0, 100, 200] and (s.tilt_x_deg, s.tilt_y_deg) == (3.0, -1.0)
    assert r.sampling_thickness_m == 0.2e-6 and not calls
    assert r.sources[0] == ("support: slab 0.20/0.28/0.36 µm from sweeps 0/100/200 (T = 0.20 µm from /sample "
                            "thickness_m; steps of recipe seed), tilt (3.0°, -1.0°) (from /sample tilt_x_deg, "
                            "tilt_y_deg)")
    assert r.sources[1] == "shrink-wrap: 15 % of max|ρ| (σ 0 voxels) every 5 sweeps in 300–500"
    assert r.sources[2] == "sampling check: T = 0.20 µm (from /sample thickness_m)"


def test_without_sample_thickness_the_data_estimate_is_used_else_the_recipe():
    calls: list = []
    normal_sample = {"surface_normal_lab": [0.0, -0.0958458, 0.9953962]}          # tilt_x 5.5°
    r = resolve_sample(quick_recipe(), recipe_name="quick", sample=normal_sample, estimate=_estimate(0.3e-6, calls))
    assert r.support.thickness_schedule_m == ((0, 0.3e-6),) and r.sampling_thickness_m == 0.3e-6
    assert r.support.tilt_x_deg == pytest.approx(5.5, abs=1e-4) and r.support.tilt_y_deg == pytest.approx(0.0)
    np.testing.assert_allclose(calls[0], normal_sample["surface_normal_lab"], atol=1e-6)   # along the sample normal
    assert "estimated from the data" in r.sources[0] and "from /sample surface_normal_lab" in r.sources[0]
    assert r.sources[1] == "shrink-wrap: never"
    none = resolve_sample(seed_recipe(), recipe_name="seed", sample={}, estimate=_estimate(None))
    assert none.support.thickness_schedule_m == seed_recipe().support.thickness_schedule_m
    assert (none.support.tilt_x_deg, none.support.tilt_y_deg) == (0.0, 0.0) and none.sampling_thickness_m is None
    assert none.sources[0].endswith("(recipe seed as written: /sample has no thickness_m; no estimate from the data: "
                                    "no crystal signal), tilt (0.0°, 0.0°) (default: untilted)")
    assert none.sources[2].startswith("sampling check: T = 0.90 µm (the widest slab")


def test_given_values_beat_the_sample_and_a_written_schedule_stays():
    sample = {"thickness_m": 0.2e-6, "tilt_x_deg": 3.0, "tilt_y_deg": -1.0}
    given = GivenSupport(thickness_m=0.4e-6, tilt_source="from --tilt-deg")
    r = resolve_sample(seed_recipe(), recipe_name="seed", sample=sample, given=given)
    np.testing.assert_allclose([t for _, t in r.support.thickness_schedule_m], [0.4e-6, 0.56e-6, 0.72e-6])
    assert (r.support.tilt_x_deg, r.support.tilt_y_deg) == (5.5, -2.0) and r.sampling_thickness_m == 0.4e-6
    assert ("(T = 0.40 µm from --thickness-m; steps of recipe seed), tilt (5.5°, -2.0°) (from --tilt-deg)"
            in r.sources[0])
    written = recipe_with(seed_recipe(), {"support": {"thickness_schedule_m": [[0, 0.6e-6]]}})
    w = resolve_sample(written, recipe_name="seed", sample=sample, given=GivenSupport(schedule_source="r.toml"))
    assert w.support.thickness_schedule_m == ((0, 0.6e-6),) and w.sampling_thickness_m == 0.2e-6
    assert "as written in r.toml" in w.sources[0]
    none = resolve_sample(recipe_with(seed_recipe(), {"support": {"kind": "none", "illumination_fraction": 0.01}}),
                          recipe_name="seed", sample=sample)
    assert none.sources[0] == "support: none (the illuminated region, Σ|P_j|² ≥ 0.01 of its maximum)"
    assert none.sampling_thickness_m == 0.2e-6
    with pytest.raises(ValueError, match="--thickness-m"):
        GivenSupport(thickness_m=-1e-6)


@pytest.mark.parametrize("sample, message", [
    ({"thickness_m": "thick"}, "/sample thickness_m: 'thick' is not a finite number"),
    ({"thickness_m": 0.0}, "/sample thickness_m: 0.0 m; a crystal thickness must be > 0"),
    ({"tilt_x_deg": 2.0}, "/sample: has only one of tilt_x_deg, tilt_y_deg"),
    ({"surface_normal_lab": [1.0, 0.0, 0.0]}, "/sample surface_normal_lab: slab normal"),
])
def test_bad_sample_entries_are_named(sample, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_sample(seed_recipe(), recipe_name="seed", sample=sample)
