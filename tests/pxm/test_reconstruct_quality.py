"""pxm reconstruct: nothing computed is lost, the quality of every run, where each voxel sits (issue 14).

The dataset is the tiny noise-free problem of ``testing/bragg_problem.py`` written as a dataset file
(no Tiled server): the ``quick`` recipe runs in about a second.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from analysis.bragg.operators import object_placement, positions_to_voxels, view_grid
from analysis.bragg.solvers.model import BraggModel
from analysis.dataset import read_dataset, read_results, write_dataset
from analysis.metrics import r_factor
from pxm.cli import main
from testing.bragg_problem import dataset_of, make_problem

STRAIN_FAILURE = "remove_phase_ramp: no interior voxel of the support has a defined gradient"


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("quality") / "dataset.h5"
    write_dataset(path, dataset_of(make_problem(upsampling=1, n_side=3, seed=4)))
    return path


def test_strain_failure_leaves_a_valid_results_file(dataset_file, tmp_path, capsys, monkeypatch):
    """The seed run's failure, forced: strain raises after the iterations. The reconstruction is on disk before
    strain runs, the command says what failed in one line and exits 3, and the file reads back."""
    res, figs = tmp_path / "results.h5", tmp_path / "figs"
    seen = {}

    def failing_strain(*args, **kwargs):
        on_disk = read_results(res)
        seen.update(status=on_disk["status"], keys=set(on_disk))
        raise ValueError(STRAIN_FAILURE)

    monkeypatch.setattr("analysis.strain.strain_from_geometry", failing_strain)
    rc = main(["reconstruct", str(dataset_file), "-o", str(res), "--recipe", "quick", "--figures", str(figs),
               "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 3
    assert seen["status"] == "iterations complete" and {"object", "probe", "metrics", "placement"} <= seen["keys"]
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: strain maps failed: ValueError: {STRAIN_FAILURE}; object, probe and metrics are "
                        f"in {res}"]
    assert "Traceback" not in captured.err
    r = read_results(res)
    assert r["status"] == "complete with post-processing errors"
    assert r["postprocessing_errors"] == {"strain": f"ValueError: {STRAIN_FAILURE}"}
    assert r["object"].ndim == 3 and r["probe"].ndim == 2 and "strain" not in r
    assert np.isfinite(r["metrics"]["r_factor_ml"]) and "valid_strain_voxels" not in r["metrics"]
    assert {p.name for p in figs.glob("*.png")} == {"object.png", "probe.png", "convergence.png"}
    assert captured.out.strip().splitlines()[-1].startswith("converged: ")


def test_quality_per_phase_printed_stored_and_recomputed(dataset_file, tmp_path, capsys):
    """R-factor per phase and the convergence verdict, printed and in /metrics; the final R-factor agrees with
    one recomputed from the results file by analysis.metrics.r_factor on a grid built from the stage positions
    (which also checks the object's placement attributes)."""
    out = tmp_path / "results.h5"
    assert main(["reconstruct", str(dataset_file), "-o", str(out), "--recipe", "quick", "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    r = read_results(out)
    m = r["metrics"]
    assert r["status"] == "complete" and r["postprocessing_errors"] == {}
    for phase, name in (("epie", "ePIE"), ("ml", "ML")):
        line = next(s for s in lines if s.startswith(f"{name}: R-factor "))
        assert float(re.search(r"R-factor ([0-9.e+-]+),", line).group(1)) == pytest.approx(m[f"r_factor_{phase}"],
                                                                                           rel=1e-3)
    assert m["r_factor"] == m["r_factor_ml"] and m["r_factor_initial"] > m["r_factor_epie"] > 0
    assert m["converged"] is False and m["convergence_phase"] == "ml" and "too few to judge" in m["convergence_reason"]
    assert lines[-1] == f"converged: no ({m['convergence_reason']})"

    ds = read_dataset(dataset_file)
    g, obj, probe = r["geometry"], r["object"], r["probe"]
    stage = ds.stage_position_m[:, 0, :]
    vg = view_grid(g, stage, margin_vox=2, object_shape=obj.shape)          # the engine's default grid
    pl = r["placement"]
    np.testing.assert_allclose(pl.origin_m, object_placement(g, vg.origin_vox).origin_m, rtol=1e-12)
    np.testing.assert_allclose(pl.position_m(positions_to_voxels(g, stage) + vg.origin_vox), -stage, atol=1e-15)
    op = BraggModel.from_geometry(g, obj.shape)
    b = np.moveaxis(r["background"], 0, -1)
    meas, pred = [], []
    for j in range(stage.shape[0]):
        psi = op.fourier.forward(op.probe_at(probe, vg.shifts_px[j]) * obj[op.view(vg.offsets_vox[j])])
        pred.append(np.abs(psi) ** 2 + b)
        meas.append(np.moveaxis(ds.frames[j], 0, -1))
    mask = np.broadcast_to(ds.detector_mask[:, :, None], op.data_shape)
    assert r_factor(np.stack(meas), np.stack(pred), mask=mask[None]) == pytest.approx(m["r_factor_ml"], rel=1e-4)


def test_truth_hook_reports_the_error_against_the_truth_per_phase(dataset_file):
    """With the first run's final ρ as the 'truth' (placed by its placement), a second identical run reports
    E_ρ ≈ 0 at the end of ML and a larger E_ρ at the end of ePIE; a truth that raises is reported, not fatal."""
    from pxm.reconstruction import ReconstructOptions, quick_recipe, reconstruct_dataset

    ds = read_dataset(dataset_file)
    opts = ReconstructOptions(progress=False)
    first = reconstruct_dataset(ds, recipe=quick_recipe(), options=opts)
    obj, pl = first.result.object, first.result.placement

    def truth(x, y, z):
        idx = np.rint(pl.index_vox(np.stack([x, y, z], axis=-1))).astype(int)
        inside = np.all((idx >= 0) & (idx < np.array(obj.shape)), axis=-1)
        out = np.zeros(x.shape, complex)
        out[inside] = obj[tuple(idx[inside].T)]
        return out

    second = reconstruct_dataset(ds, recipe=quick_recipe(), options=opts, truth_object=truth)
    m = second.metrics
    assert m["truth_e_rho_ml"] < 1e-4 and m["truth_e_rho"] == m["truth_e_rho_ml"]
    assert m["truth_e_rho_epie"] > 10 * m["truth_e_rho_ml"]
    assert any("E_rho vs truth" in line for line in second.quality_lines())

    def broken(x, y, z):
        raise RuntimeError("truth unavailable")

    third = reconstruct_dataset(ds, recipe=quick_recipe(), options=opts, truth_object=broken)
    assert third.postprocessing_errors == {"truth_error": "RuntimeError: truth unavailable"}
    assert third.strain is not None and "truth_e_rho" not in third.metrics


def test_a_failed_cxi_export_is_reported_and_the_rest_written(dataset_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "results.h5"
    # a --cxi path that cannot be written is refused before any computing (issue 15: outputs checked first) ...
    rc = main(["reconstruct", str(dataset_file), "-o", str(out), "--recipe", "quick", "--no-progress",
               "--cxi", str(tmp_path / "no-such-dir" / "out.cxi")])
    assert rc == 1 and not out.exists() and "no-such-dir" in capsys.readouterr().err
    # ... and an export that fails while writing (a full disk) is reported, with everything else written

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("analysis.dataset.write_cxi", disk_full)
    rc = main(["reconstruct", str(dataset_file), "-o", str(out), "--recipe", "quick", "--no-progress",
               "--cxi", str(tmp_path / "out.cxi")])
    err = capsys.readouterr().err
    assert rc == 3 and "warning: CXI export failed: " in err and "No space left" in err and "Traceback" not in err
    r = read_results(out)
    assert set(r["postprocessing_errors"]) == {"cxi"} and "reconstruction" in r["strain"]
