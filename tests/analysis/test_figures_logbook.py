"""Issue 17 point 2: logbook figures (sample frame, units on every colour bar, phase wheel, footer, phases marked)."""

from __future__ import annotations

import dataclasses
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from analysis.figure_frames import resample_to_sample_frame, sample_frame, sample_planes
from analysis.figure_style import (
    FOOTER_TAG,
    FigureFooter,
    colorbar_labels,
    finish_figure,
    footer_text,
    phase_wheels,
    pxm_version,
)
from analysis.figures import (
    build_convergence_figure,
    build_map_figure,
    build_object_figure,
    build_probe_figure,
    build_strain_figure,
    support_events,
)
from analysis.strain import StrainMaps, map_to_sample_frame


def _tilted_slab(theta_deg: float = 30.0, thickness_m: float = 120e-9, shape=(48, 8, 48), vox=10e-9):
    """A slab |z| ≤ T/2 (z ∥ Q) sampled on the reconstruction grid, where it is a tilted band."""
    frame = sample_frame(shape, (vox,) * 3, theta_bragg_rad=math.radians(theta_deg))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    z = frame.position_m(idx)[..., 2]
    return frame, (np.abs(z) <= thickness_m / 2).astype(float), z


def test_tilted_slab_becomes_a_band_parallel_to_x_in_the_sample_frame():
    frame, slab, _ = _tilted_slab()
    # in the reconstruction frame the slab is tilted: its rows along e3 are not all alike
    rows = slab[:, 4, :]
    assert not np.allclose(rows[10], rows[30])
    x = np.linspace(-0.15e-6, 0.15e-6, 31)
    z = np.linspace(-0.12e-6, 0.12e-6, 49)
    vals, covered = resample_to_sample_frame(slab, frame, x, [0.0], z)
    assert covered.all()                                       # the window lies inside the grid
    plane = vals[:, 0, :]                                      # [x, z]
    # every column along z is the same profile: the band is parallel to x
    assert np.max(np.abs(plane - plane.mean(axis=0, keepdims=True))) < 0.35
    profile = plane.mean(axis=0)
    inside, outside = np.abs(z) < 0.045e-6, np.abs(z) > 0.075e-6
    assert profile[inside].min() > 0.95 and profile[outside].max() < 0.05
    # thickness from the profile: ∫ profile dz ≈ T (trilinear edges blur, the area stays)
    assert np.sum(profile) * (z[1] - z[0]) == pytest.approx(120e-9, rel=0.12)


def test_sample_planes_are_labelled_in_um_and_complex_values_interpolate_without_wrapping():
    frame, slab, zpos = _tilted_slab()
    phase = 5e7 * zpos                                          # φ = 0.05 rad/nm · z: 6 rad across the slab
    rho = slab * np.exp(1j * phase)
    planes = sample_planes(rho, frame)
    assert [p.labels for p in planes] == [("x (µm)", "z (µm)"), ("x (µm)", "y (µm)"), ("y (µm)", "z (µm)")]
    xz = planes[0]
    nz, nx = xz.values.shape
    zc = np.linspace(xz.extent_um[2], xz.extent_um[3], nz + 1)[:-1] + (xz.extent_um[3] - xz.extent_um[2]) / (2 * nz)
    col = xz.values[:, nx // 2]
    sel = np.isfinite(col) & (np.abs(col) > 0.9)                # inside the slab
    assert sel.sum() >= 8
    np.testing.assert_allclose(np.angle(col[sel] * np.exp(-1j * 5e7 * zc[sel] * 1e-6)), 0.0, atol=0.1)


def _maps(shape=(12, 6, 12), vox=(20e-9, 20e-9, 20e-9)):
    rng = np.random.default_rng(1)
    m = np.ones(shape, bool)
    m[:2] = False
    f = np.where(m, rng.normal(0, 1e-4, shape), np.nan)
    return StrainMaps(eps_zz=f, omega_x_rad=f * 2, omega_y_rad=f * 3, amplitude=m.astype(float), mask=m,
                      voxel_size_m=vox, origin_m=(0.0,) * 3)


def _all_labelled(fig) -> list[str]:
    labels = colorbar_labels(fig)
    assert labels and all(lab.strip() for lab in labels), labels
    return labels


def test_every_colour_bar_of_every_bragg_figure_names_its_unit_and_phase_has_a_wheel():
    frame, slab, zpos = _tilted_slab(shape=(24, 6, 24))
    rho = slab * np.exp(1j * 1e7 * zpos)
    fig = build_object_figure(rho, voxel_size_m=frame.voxel_size_m, frame=frame)
    labels = _all_labelled(fig)
    assert labels.count("|ρ| (arb. units)") == 6                # 3 reconstruction + 3 sample-frame slices
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("sample frame: phase x–z") for t in titles)
    assert phase_wheels(fig)
    assert {ax.get_xlabel() for ax in fig.axes if ax.get_title().startswith("sample frame")} >= {"x (µm)", "y (µm)"}
    plt.close(fig)

    maps = _maps()
    fig = build_strain_figure(maps, sample_maps=map_to_sample_frame(maps, theta_bragg_rad=math.radians(30)))
    labels = _all_labelled(fig)
    assert len(labels) == 18 and "ε_zz (×10⁻⁴, dimensionless)" in labels and "ω_x (µrad)" in labels
    sample_axes = [ax for ax in fig.axes if ax.get_title().startswith("sample frame: ε_zz")]
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in sample_axes] == [("x (µm)", "z (µm)"), ("x (µm)", "y (µm)"),
                                                                          ("y (µm)", "z (µm)")]
    plt.close(fig)

    fig = build_probe_figure(rho[:, 3, :], pixel_size_m=(10e-9, 10e-9), amplitude_unit="√photons")
    assert _all_labelled(fig) == ["|P| (√photons)"]
    assert phase_wheels(fig)
    plt.close(fig)

    fig = build_map_figure([("strain", "strain (dimensionless)", np.full((4, 5), 1e-4)),
                            ("object", "", np.ones((4, 5), complex))], pixel_size_m=1e-7)
    assert _all_labelled(fig) == ["strain (dimensionless)"]      # the complex field has a wheel, no colour bar
    plt.close(fig)


def test_finish_refuses_an_unlabelled_colour_bar_and_writes_the_footer(tmp_path):
    fig, ax = plt.subplots()
    fig.colorbar(ax.imshow(np.eye(3)), ax=ax)
    with pytest.raises(ValueError, match="without a label"):
        finish_figure(fig, tmp_path / "x.png", None)
    plt.close(fig)
    fig = build_probe_figure(np.ones((4, 4), complex), pixel_size_m=1e-8)
    footer = FigureFooter(run_uid="0123abcd-uid", recipe="quick (3 ePIE + 2 ML)", date_utc="2026-12-07 06:00 UTC")
    assert finish_figure(fig, None, footer) is None
    text = footer_text(fig)
    assert "0123abcd-uid" in text and "quick (3 ePIE + 2 ML)" in text and "2026-12-07" in text
    assert f"pxm {pxm_version()}" in text and pxm_version() != "unknown"
    assert [t for t in fig.texts if t.get_gid() == FOOTER_TAG]
    plt.close(fig)


def test_convergence_marks_where_ml_starts_the_support_steps_and_the_r_factor():
    costs = np.r_[np.linspace(1.0, 0.1, 40), np.linspace(5e6, 4e6, 20)]
    phases = ["epie"] * 40 + ["ml"] * 20
    recipe = {"support": {"kind": "slab", "thickness_schedule_m": [(0, 0.5e-6), (10, 0.7e-6), (100, 0.9e-6)],
                          "shrinkwrap_start_iter": 30, "shrinkwrap_stop_iter": 500}}
    events, sw = support_events(recipe, 40)
    assert events == [(11, "T = 0.7 µm")] and sw == (31, 40)   # the 100-sweep step never ran
    fig = build_convergence_figure(costs, phases, r_factors={"initial": 0.9, "epie": 0.3, "ml": 0.2}, recipe=recipe)
    ax = fig.axes[0]
    starts = {ln.get_gid(): ln.get_xdata()[0] for ln in ax.lines if (ln.get_gid() or "").startswith("phase-start")}
    assert starts == {"phase-start-epie": 1, "phase-start-ml": 41}
    assert [ln.get_xdata()[0] for ln in ax.lines if ln.get_gid() == "support-step"] == [11]
    assert any(p.get_gid() == "shrink-wrap" for p in ax.patches)
    # each phase relative to its own start: no 10⁷ jump at the switch
    ydata = np.concatenate([ln.get_ydata() for ln in ax.lines if ln.get_gid() is None])
    assert ydata.max() <= 1.0 + 1e-12 and ydata.min() >= 0.09
    r = [ln for ln in fig.axes[1].lines if ln.get_gid() is None]
    assert list(r[0].get_xdata()) == [0, 40, 60] and list(r[0].get_ydata()) == [0.9, 0.3, 0.2]
    assert fig.axes[1].get_ylabel().startswith("R-factor")
    plt.close(fig)


def test_outcome_figures_of_a_real_reconstruction_carry_footer_units_and_sample_frame(tmp_path, monkeypatch):
    """save_outcome_figures on a small engine run: every figure passes the checks, its footer names the run."""
    import analysis.figures as figmod
    from analysis.bragg import PipelineOptions, reconstruct
    from analysis.bragg.outcome import save_outcome_figures
    from analysis.bragg.recipes import quick_recipe
    from analysis.bragg.solvers.options import Execution
    from testing.bragg_problem import engine_inputs, make_problem, scan_of

    problem = make_problem()
    kw = engine_inputs(problem)
    recipe = dataclasses.replace(quick_recipe(), allow_undersampled=True, n_epie_iterations=3, n_ml_iterations=2)
    scan = dataclasses.replace(scan_of(problem), sample={"name": "factory"},
                               provenance={"raw_uid": "feedbeef-0000-run"})
    out = reconstruct(scan, recipe, kw["probe"],
        options=PipelineOptions(execution=Execution(backend="numpy")), recipe_name="quick")
    seen = []

    def spy(fig, path, footer):                     # the checks and footer of _save, without the PNG (fast)
        finish_figure(fig, None, footer)
        seen.append((path.name, colorbar_labels(fig), [ax.get_title() for ax in fig.axes], fig))
        plt.close(fig)
        return path

    monkeypatch.setattr(figmod, "_save", spy)
    errors: dict[str, str] = {}
    paths = save_outcome_figures(out, tmp_path, errors)
    assert errors == {}
    assert sorted(p.name for p in paths) == ["convergence.png", "object.png", "probe.png", "strain.png"]
    for name, labels, _titles, fig in seen:
        assert all(lab.strip() for lab in labels), (name, labels)
        text = footer_text(fig)
        assert "feedbeef-0000-run" in text and "quick (3 ePIE + 2 ML)" in text and "pxm " in text, name
    titles = {name: t for name, _, t, _ in seen}
    assert any(t.startswith("sample frame") for t in titles["object.png"])
    assert any(t.startswith("sample frame") for t in titles["strain.png"])
    conv = next(fig for name, _, _, fig in seen if name == "convergence.png")
    starts = {ln.get_gid(): ln.get_xdata()[0] for ln in conv.axes[0].lines if ln.get_gid()}
    assert starts["phase-start-ml"] == 4
