"""Issue 17 point 2: `--figures DIR` of pxm probe, dfxm-demo, fp-reconstruct and polarization (same footer, units)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

import analysis.figures as figmod
from analysis.dataset import write_results
from analysis.figure_style import colorbar_labels, footer_text, phase_wheels
from analysis.strain import StrainMaps
from pxm.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def drawn(monkeypatch):
    """Every figure saved through analysis.figures: (file name, colour-bar labels, footer, has a phase wheel)."""
    seen: list[tuple[str, list[str], str, bool]] = []
    real = figmod._save

    def spy(fig, path, footer):
        out = real(fig, path, footer)
        seen.append((out.name, colorbar_labels(fig), footer_text(fig), bool(phase_wheels(fig))))
        return out

    monkeypatch.setattr(figmod, "_save", spy)
    return seen


def _check(seen, folder, names, uid):
    assert sorted(n for n, *_ in seen) == sorted(names)
    for name, labels, footer, _ in seen:
        assert (folder / name).read_bytes()[:8] == PNG
        assert all(lab.strip() for lab in labels), (name, labels)
        assert f"run {uid}" in footer and "pxm " in footer and " UTC" in footer, (name, footer)


def test_polarization_figures(tmp_path, drawn, capsys):
    eps = np.full((6, 8, 4), 4e-3)
    eps[:, 4:, :] = -2e-3
    mask = np.ones(eps.shape, bool)
    mask[0] = False
    eps[0] = np.nan
    maps = StrainMaps(eps_zz=eps, omega_x_rad=np.zeros_like(eps), omega_y_rad=np.zeros_like(eps),
                      amplitude=np.ones_like(eps), mask=mask, voxel_size_m=(20e-9,) * 3, origin_m=(0.0,) * 3,
                      frame="sample")
    res = tmp_path / "results.h5"
    write_results(res, object=np.ones(eps.shape, np.complex64), probe=np.ones((4, 4), np.complex64),
                  voxel_size_m=(20e-9,) * 3, strain=maps, provenance={"raw_uid": "ab" * 16})
    figs = tmp_path / "figs"
    assert main(["polarization", str(res), "--material", "BaTiO3", "--hkl", "0", "0", "2", "-o",
                 str(tmp_path / "pol.h5"), "--figures", str(figs)]) == 0
    _check(drawn, figs, ["polarization_sample.png"], "ab" * 16)
    (_, labels, footer, _), = drawn
    assert labels[:3] == ["|P| (C/m²)"] * 3 and "σ_gg (MPa)" in labels and "BaTiO3 (0 0 2)" in footer
    assert f"wrote {figs / 'polarization_sample.png'}" in capsys.readouterr().out

    not_a_folder = tmp_path / "a_file"
    not_a_folder.write_text("x")
    assert main(["polarization", str(res), "--material", "BaTiO3", "--hkl", "0", "0", "2", "-o",
                 str(tmp_path / "pol2.h5"), "--figures", str(not_a_folder)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file; give a folder" in err and "Traceback" not in err
    assert not (tmp_path / "pol2.h5").exists()                         # refused before any work


def test_dfxm_demo_and_fp_reconstruct_figures(tiled_service, tiled_layout, tmp_path, drawn, capsys):
    key = tiled_service.config.api_key
    names = ["fp_object.png", "fp_pupil.png", "fp_convergence.png"]
    demo_figs = tmp_path / "demo"
    assert main(["dfxm-demo", "--tiled-uri", tiled_service.uri, "--api-key", key,
                 "--data-dir", str(tiled_service.config.data_dir),
                 "--n-px", "16", "--grid", "3", "--step-px", "3", "--iterations", "3",
                 "--figures", str(demo_figs)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    uid = next(line.split()[2] for line in out.splitlines() if line.startswith("run      :"))
    _check(drawn, demo_figs, names, uid)
    assert all("pxm dfxm-demo" in footer for _, _, footer, _ in drawn)

    drawn.clear()
    figs = tmp_path / "fp"
    assert main(["fp-reconstruct", "--run", uid, "--tiled-uri", tiled_service.uri, "--api-key", key,
                 "--iterations", "3", "--no-publish", "--figures", str(figs)]) == 0, capsys.readouterr().err
    _check(drawn, figs, names, uid)
    by_name = {n: (labels, wheel) for n, labels, _, wheel in drawn}
    assert "ε_GG (×10⁻⁴, dimensionless)" in by_name["fp_object.png"][0] and by_name["fp_object.png"][1]
    assert "tilt (µrad)" in by_name["fp_object.png"][0] and "|O| (arb. units)" in by_name["fp_object.png"][0]
    assert by_name["fp_pupil.png"][1]                                   # the complex pupil has its colour wheel
    assert all("Zernike-EPRY 3 sweeps" in footer and "pxm fp-reconstruct" in footer for _, _, footer, _ in drawn)


def test_ferroelectric_demo_figures(tiled_service, tmp_path, drawn, capsys):
    """`pxm dfxm-demo --ferroelectric --figures DIR`: both variant scans' FP figures and the polarization maps."""
    figs = tmp_path / "fe"
    assert main(["dfxm-demo", "--ferroelectric", "--tiled-uri", tiled_service.uri,
                 "--api-key", tiled_service.config.api_key, "--data-dir", str(tiled_service.config.data_dir),
                 "--n-px", "16", "--grid", "3", "--step-px", "3", "--iterations", "3",
                 "--figures", str(figs)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    uids = {line.split()[1].strip("():"): line.split()[3] for line in out.splitlines()
            if line.startswith("run (") and "variant" in line}
    assert set(uids) == {"c", "a"}, out
    fp = ["fp_object.png", "fp_pupil.png", "fp_convergence.png"]
    names = [f"{v}_{n}" for v in ("c", "a") for n in fp] + ["polarization_fp-c+fp-a.png", "polarization_variants.png"]
    assert sorted(n for n, *_ in drawn) == sorted(names)
    for name, labels, footer, _ in drawn:
        assert (figs / name).read_bytes()[:8] == PNG and f"wrote {figs / name}" in out
        assert all(lab.strip() for lab in labels), (name, labels)
        assert "pxm dfxm-demo --ferroelectric" in footer and "pxm " in footer and " UTC" in footer, (name, footer)
        variant = name.split("_")[0]
        if variant in uids:                                  # each scan's figures name its own run
            assert f"run {uids[variant]}" in footer and f"({variant} variant scan)" in footer, (name, footer)
    by_name = {n: labels for n, labels, _, _ in drawn}
    pol = by_name["polarization_fp-c+fp-a.png"]
    assert "|P| (C/m²)" in pol and "σ_gg (MPa)" in pol
    assert any(lab.startswith("variant (0 not inverted, 1 c, 2 a)") for lab in by_name["polarization_variants.png"])


def test_probe_figures(tiled_service, tiled_layout, tmp_path, drawn, capsys):
    from pxm.runengine import make_run_engine, run_uids
    from testing.spiral_scan import spiral_beamline, spiral_plan

    _, raw, _ = tiled_layout
    raw_dir = tiled_service.config.raw_path / uuid.uuid4().hex[:8]
    raw_dir.mkdir(parents=True)
    fwd, geom = spiral_beamline(raw_dir)
    wiring = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs", beam_signal=fwd.monitor.current)
    (uid,) = run_uids(wiring.RE(spiral_plan(fwd, geom)))
    figs = tmp_path / "probe_figs"
    assert main(["probe", uid, "--tiled-uri", tiled_service.uri, "--api-key", tiled_service.config.api_key,
                 "-o", str(tmp_path / "probe.h5"), "--iterations", "3", "--figures", str(figs)]) == 0, \
        capsys.readouterr().err
    _check(drawn, figs, ["probe.png", "probe_convergence.png"], uid)
    labels = {n: lab for n, lab, _, _ in drawn}
    assert labels["probe.png"] == ["|P| (√photons per pixel, arb. scale)"]
    assert all("epie 3 sweeps" in footer for _, _, footer, _ in drawn)
