"""resolution.png carries the same provenance footer as every other pxm figure (issue 17 point 2)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import analysis.figure_style as style
from analysis.bragg.resolution import ResolutionEstimate, save_resolution
from analysis.figure_style import FigureFooter, footer_text
from analysis.metrics import ShellCurve

PNG = b"\x89PNG\r\n\x1a\n"


def _curve() -> ShellCurve:
    f = np.linspace(1e6, 2e7, 12)                             # 1/m
    return ShellCurve(frequency=f, value=np.exp(-f / 8e6), threshold=np.full(f.size, 0.2),
                      n_voxels=np.arange(12) * 10 + 5, crossing_frequency=8e6 * np.log(5.0))


def _estimate() -> ResolutionEstimate:
    c = _curve()
    return ResolutionEstimate(fsc=c, fsc_directional={"z": c, "y": c, "x": c}, mask_voxels=100, split_seed=0)


@pytest.fixture
def footers(monkeypatch):
    """The footer line of every figure finished through analysis.figure_style.finish_figure."""
    seen: list[tuple[str, str]] = []
    real = style.finish_figure

    def spy(fig, path, footer, **kw):
        out = real(fig, path, footer, **kw)
        seen.append((str(path), footer_text(fig)))
        return out

    monkeypatch.setattr(style, "finish_figure", spy)
    return seen


def test_save_resolution_writes_the_footer(tmp_path, footers):
    foot = FigureFooter(run_uid="0123abcd", recipe="default (200 ePIE + 100 ML)", date_utc="2026-12-07 07:00 UTC")
    out = save_resolution(tmp_path / "resolution.png", _estimate(), footer=foot)
    assert out.read_bytes()[:8] == PNG
    assert footers == [(str(out), foot.text())]
    assert "run 0123abcd" in foot.text() and "pxm " in foot.text()


def test_outcome_resolution_figure_has_the_outcomes_footer(tmp_path, footers):
    """save_outcome_figures hands its footer (run uid, recipe, date, version) to resolution.png too."""
    from analysis.bragg import PipelineOptions, reconstruct
    from analysis.bragg.outcome import outcome_footer, save_outcome_figures
    from analysis.bragg.recipes import quick_recipe
    from analysis.bragg.solvers.options import Execution
    from testing.bragg_problem import engine_inputs, make_problem, scan_of

    problem = make_problem(n_angles=6, n_side=3)
    recipe = dataclasses.replace(quick_recipe(), allow_undersampled=True)
    outcome = reconstruct(scan_of(problem), recipe, engine_inputs(problem)["probe"],
                              options=PipelineOptions(execution=Execution(backend="numpy"), progress=False),
                              recipe_name="quick")
    outcome = dataclasses.replace(outcome, resolution=_estimate(),
                                  provenance={**outcome.provenance, "raw_uid": "feedbeef" * 4})
    errors: dict[str, str] = {}
    paths = save_outcome_figures(outcome, tmp_path, errors)
    assert tmp_path / "resolution.png" in paths, errors
    footer_of = {p.rsplit("/", 1)[-1]: text for p, text in footers}
    assert footer_of["resolution.png"] == outcome_footer(outcome).text()
    assert "run " + "feedbeef" * 4 in footer_of["resolution.png"]
