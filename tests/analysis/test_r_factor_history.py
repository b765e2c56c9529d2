"""The R-factor along the run (issue 17 point 2): recorded every few iterations of each phase, its last value the
phase's closing R-factor, kept in the results file and the published dataset, drawn in the convergence figure."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from analysis.bragg.solvers.quality import r_factor_due


def test_r_factor_due_spreads_points_over_the_phase_and_ends_on_its_last_iteration():
    due = [k for k in range(1, 201) if r_factor_due(k, 200)]
    assert len(due) == 20 and due[-1] == 200 and due[0] == 10
    assert [k for k in range(1, 4) if r_factor_due(k, 3)] == [1, 2, 3]
    assert not r_factor_due(0, 5) and r_factor_due(7, 7, points=2)


@pytest.fixture(scope="module")
def outcome():
    """A short run of the tests' engine-model problem: 12 ePIE sweeps then 6 ML iterations (seconds)."""
    from analysis.bragg import PipelineOptions, reconstruct
    from analysis.bragg.recipes import quick_recipe
    from analysis.bragg.solvers.options import Execution
    from testing.bragg_problem import engine_inputs, make_problem, scan_of

    problem = make_problem()
    recipe = dataclasses.replace(quick_recipe(), n_epie_iterations=12, n_ml_iterations=6, allow_undersampled=True)
    return reconstruct(scan_of(problem), recipe, engine_inputs(problem)["probe"],
                           options=PipelineOptions(execution=Execution(backend="numpy"), progress=False),
                           recipe_name="quick")


def test_history_has_several_points_per_phase_and_ends_on_the_closing_r_factor(outcome):
    res = outcome.result
    hist = np.asarray(res.r_factor_history, float)
    phases = np.asarray(res.phases)
    assert hist.shape == (len(res.costs),)
    for ph in ("epie", "ml"):
        h = hist[phases == ph]
        assert np.isfinite(h).sum() > 1, (ph, h)
        assert np.isfinite(h[-1]) and h[-1] == res.r_factors[ph]      # the phase's end is in the history
    assert hist[-1] == outcome.metrics["r_factor"]                      # = the closing line's R-factor
    assert outcome.metrics["r_factor"] == outcome.metrics["r_factor_ml"]
    # an ePIE run improves the fit: the R-factor falls from its first recorded value to the phase's end
    first = hist[np.flatnonzero(np.isfinite(hist))[0]]
    assert res.r_factors["epie"] < first <= res.r_factors["initial"] * 1.001


def test_history_goes_to_the_results_file_the_dataset_and_the_figure(outcome, tmp_path):
    from analysis.bragg.outcome import write_outcome
    from analysis.dataset import read_results
    from analysis.figures import build_convergence_figure
    from pxm.publication import outcome_dataset

    hist = np.asarray(outcome.result.r_factor_history, float)
    path = tmp_path / "results.h5"
    write_outcome(outcome, path)
    np.testing.assert_array_equal(read_results(path)["r_factor_history"], hist)
    with h5py.File(path) as f:
        assert f["r_factor_history"].shape == f["error_history"].shape
    ds = outcome_dataset(outcome)
    assert ds["r_factor"].dims == ("iteration",) and ds["r_factor"].attrs["units"] == "1"
    np.testing.assert_array_equal(ds["r_factor"].values, hist)
    res = outcome.result
    fig = build_convergence_figure(res.costs, res.phases, r_factors=res.r_factors, r_factor_history=hist)
    axr = fig.axes[1]
    (line,) = [ln for ln in axr.get_lines() if ln.get_label() == "R-factor"]
    assert len(line.get_xdata()) == int(np.isfinite(hist).sum())
    assert line.get_ydata()[-1] == pytest.approx(outcome.metrics["r_factor"])
