"""``pxm reconstruct``: the sample is an input (issue 14, point 1) — recipe files, the whole schedule scaled by
--iterations, support and probe options, /sample's thickness and tilt, the data's thickness, the sampling override.

Datasets come from the engine's own small problem (``testing/bragg_problem.py``): no Tiled server.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.dataset import read_results, write_dataset
from pxm.cli import main
from testing.bragg_problem import dataset_of, make_problem

SAMPLE = {"name": "tilted-foil", "thickness_m": 0.35e-6, "tilt_x_deg": 5.5, "tilt_y_deg": -2.0}


@pytest.fixture(scope="module")
def problem():
    return make_problem(n_side=3, seed=4)


@pytest.fixture(scope="module")
def bare_file(problem, tmp_path_factory):
    """/sample has a name only (as data from another code)."""
    path = tmp_path_factory.mktemp("recipe-cli") / "bare.h5"
    write_dataset(path, dataset_of(problem))
    return path


@pytest.fixture(scope="module")
def sample_file(problem, tmp_path_factory):
    """/sample has the foil's thickness and tilts."""
    path = tmp_path_factory.mktemp("recipe-cli") / "sample.h5"
    write_dataset(path, dataclasses.replace(dataset_of(problem), sample=dict(SAMPLE)))
    return path


def _run(capsys, argv):
    rc = main(["reconstruct", *[str(a) for a in argv], "--no-progress"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _one_line_error(capsys, argv):
    rc, _, err = _run(capsys, argv)
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "error:" in err, err
    return err.strip()


def test_sample_thickness_and_tilt_set_the_support_and_the_sampling_check(capsys, sample_file, tmp_path):
    res = tmp_path / "r.h5"
    rc, out, _ = _run(capsys, [sample_file, "-o", res, "--recipe", "quick"])
    assert rc == 0
    assert ("support: slab 0.35 µm (from /sample thickness_m), tilt (5.5°, -2.0°) (from /sample tilt_x_deg, "
            "tilt_y_deg)") in out
    assert "sampling check: T = 0.35 µm (from /sample thickness_m)" in out and "shrink-wrap: never" in out
    p = read_results(res)["parameters"]
    assert p["support"]["thickness_schedule_m"] == [[0, 0.35e-6]] and p["sampling_thickness_m"] == 0.35e-6
    assert (p["support"]["tilt_x_deg"], p["support"]["tilt_y_deg"]) == (5.5, -2.0)
    assert p["sources"][0].startswith("support: slab 0.35 µm (from /sample thickness_m)")


def test_without_sample_thickness_it_is_estimated_from_the_data(capsys, bare_file, tmp_path):
    """The problem's slab is 0.35 µm (soft edges, tilted 5.5°/−2° while the estimate assumes untilted)."""
    res = tmp_path / "r.h5"
    rc, out, _ = _run(capsys, [bare_file, "-o", res, "--recipe", "quick"])
    assert rc == 0 and "estimated from the data" in out and "(default: untilted)" in out
    t = read_results(res)["parameters"]["sampling_thickness_m"]
    assert 0.3e-6 < t < 0.45e-6
    rc, out, _ = _run(capsys, [bare_file, "-o", res, "--recipe", "quick", "--thickness-m", "0.3e-6",
                               "--tilt-deg", "1", "2"])
    assert rc == 0 and "support: slab 0.30 µm (from --thickness-m), tilt (1.0°, 2.0°) (from --tilt-deg)" in out
    p = read_results(res)["parameters"]
    assert p["support"]["thickness_schedule_m"] == [[0, 0.3e-6]] and p["support"]["tilt_y_deg"] == 2.0


def test_iterations_scale_the_seed_schedule_shrink_wrap_included(capsys, sample_file, tmp_path):
    """--iterations 6 on the seed: shrink-wrap 300–500 every 5 becomes 2–3 every sweep (it used to stay at 300
    and never ran), the thickness steps and the probe start move, ML scales unless --ml is given."""
    res = tmp_path / "r.h5"
    rc, out, _ = _run(capsys, [sample_file, "-o", res, "--recipe", "seed", "--iterations", "6", "--ml", "1"])
    assert rc == 0 and "shrink-wrap: 15 % of max|ρ| (σ 0 voxels) every sweep in 2–3" in out
    p = read_results(res)["parameters"]
    s = p["support"]
    assert (s["shrinkwrap_start_iter"], s["shrinkwrap_stop_iter"], s["shrinkwrap_every"]) == (2, 3, 1)
    assert [i for i, _ in s["thickness_schedule_m"]] == [0, 1]
    np.testing.assert_allclose([t for _, t in s["thickness_schedule_m"]], [0.35e-6, 0.63e-6])   # T, then 1.8 T
    assert p["epie"]["probe_update_start_iter"] == 1 and p["epie"]["na_mask_stop_iter"] == 6
    assert (p["n_epie_iterations"], p["n_ml_iterations"]) == (6, 1)


def test_recipe_file_sets_options_and_refuses_unknown_keys(capsys, sample_file, tmp_path):
    f = tmp_path / "recipe.toml"
    f.write_text("n_epie_iterations = 2\nn_ml_iterations = 1\n[epie]\nbeta = 0.3\n[ml]\nsmoothness = 0.01\n"
                 "[support]\nthickness_schedule_m = [[0, 0.4e-6], [1, 0.5e-6]]\nshrinkwrap_threshold = 0.2\n"
                 "[free]\nfraction = 0.1\n")
    res = tmp_path / "r.h5"
    rc, out, _ = _run(capsys, [sample_file, "-o", res, "--recipe", "quick", "--recipe-file", f])
    assert rc == 0 and f"as written in {f}" in out
    p = read_results(res)["parameters"]
    assert (p["n_epie_iterations"], p["epie"]["beta"], p["ml"]["smoothness"], p["free"]["fraction"]) == (2, 0.3, 0.01,
                                                                                                        0.1)
    assert p["support"]["thickness_schedule_m"] == [[0, 0.4e-6], [1, 0.5e-6]]            # as written, not rescaled
    assert p["support"]["shrinkwrap_threshold"] == 0.2 and p["sampling_thickness_m"] == 0.35e-6
    bad = tmp_path / "bad.toml"
    bad.write_text("[support]\nshrinkwrap_treshold = 0.2\n")
    err = _one_line_error(capsys, [sample_file, "-o", tmp_path / "x.h5", "--recipe-file", bad])
    assert "unknown key 'support.shrinkwrap_treshold'" in err and "shrinkwrap_threshold" in err
    assert not (tmp_path / "x.h5").exists()


def test_support_and_shrinkwrap_options(capsys, sample_file, tmp_path):
    res = tmp_path / "r.h5"
    rc, out, _ = _run(capsys, [sample_file, "-o", res, "--recipe", "quick", "--support", "none"])
    assert rc == 0 and "support: none (the whole object grid)" in out
    r = read_results(res)
    assert r["parameters"]["support"]["kind"] == "none" and r["parameters"]["sampling_thickness_m"] == 0.35e-6
    assert r["metrics"]["support_voxels"] == r["object"].size
    rc, out, _ = _run(capsys, [sample_file, "-o", res, "--recipe", "quick", "--support", "illuminated"])
    r = read_results(res)
    assert rc == 0 and "support: none (the illuminated region" in out
    assert r["parameters"]["support"]["illumination_fraction"] == 0.01
    assert r["metrics"]["support_voxels"] < r["object"].size
    rc, out, _ = _run(capsys, [sample_file, "-o", res, "--recipe", "seed", "--iterations", "6", "--ml", "0",
                               "--shrinkwrap-threshold", "0.25", "--shrinkwrap-sigma-vox", "1.5"])
    s = read_results(res)["parameters"]["support"]
    assert rc == 0 and (s["shrinkwrap_threshold"], s["shrinkwrap_sigma_vox"]) == (0.25, 1.5)
    assert "shrink-wrap: 25 % of max|ρ| (σ 1.5 voxels)" in out
    rc, out, _ = _run(capsys, [sample_file, "-o", res, "--recipe", "seed", "--iterations", "6", "--ml", "0",
                               "--no-shrinkwrap"])
    assert rc == 0 and "shrink-wrap: never" in out
    assert read_results(res)["parameters"]["support"]["shrinkwrap_start_iter"] is None
    err = _one_line_error(capsys, [sample_file, "-o", tmp_path / "x.h5", "--shrinkwrap-threshold", "1.5"])
    assert "threshold in [0, 1)" in err


def test_fixed_probe_at_u2_leaves_the_probe_unchanged(capsys, sample_file, tmp_path):
    """--fixed-probe --upsampling 2 on a U = 1 dataset: P2 on the U = 2 grid is the model probe, only rescaled
    (--recipe baseline could only do U = 1); without --fixed-probe ML moves it."""
    from analysis.dataset import read_dataset
    from pxm.reconstruction import initial_probe

    g2 = dataclasses.replace(read_dataset(sample_file).geometry, upsampling=2)
    start, _ = initial_probe(g2)
    corr = {}
    for name, extra in (("fixed", ["--fixed-probe"]), ("joint", [])):
        res = tmp_path / f"{name}.h5"
        rc, _, _ = _run(capsys, [sample_file, "-o", res, "--recipe", "quick", "--upsampling", "2", *extra])
        assert rc == 0
        r = read_results(res)
        assert r["parameters"]["upsampling"] == 2 and r["probe"].shape == start.shape
        corr[name] = abs(np.vdot(start, r["probe"])) / (np.linalg.norm(start) * np.linalg.norm(r["probe"]))
        if name == "fixed":
            assert not r["parameters"]["epie"]["update_probe"] and not r["parameters"]["ml"]["update_probe"]
    assert corr["fixed"] > 1 - 1e-6 and corr["joint"] < 1 - 1e-4


def test_undersampled_data_need_the_explicit_override(capsys, problem, tmp_path):
    """A rocking step ten times too coarse for the probe: one-line error naming --allow-undersampled; with it the
    run goes on and says so once."""
    coarse = dataclasses.replace(problem, geometry=dataclasses.replace(problem.geometry, rocking_step_deg=0.04))
    path = tmp_path / "coarse.h5"
    write_dataset(path, dataclasses.replace(dataset_of(coarse), sample=dict(SAMPLE)))
    err = _one_line_error(capsys, [path, "-o", tmp_path / "x.h5", "--recipe", "quick"])
    assert "sampling condition (seed Eq 12) fails" in err and "--allow-undersampled" in err
    assert "T = 0.350 µm" in err and not (tmp_path / "x.h5").exists()
    rc, out, err = _run(capsys, [path, "-o", tmp_path / "r.h5", "--recipe", "quick", "--allow-undersampled"])
    assert rc == 0 and "allow_undersampled: a failure only warns" in out
    warn = [line for line in err.splitlines() if "warning: sampling condition" in line]
    assert len(warn) == 1 and warn[0].startswith("pxm reconstruct: warning:") and "going on" in warn[0]
    assert read_results(tmp_path / "r.h5")["parameters"]["allow_undersampled"] is True
