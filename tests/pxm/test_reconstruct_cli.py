"""pxm export → reconstruct (quick) → results/CXI/PNGs → publish, on a tiny scan in the session Tiled server.

Frames come from ``devices.testing.EncodingFrameSource`` (fast; the physics is not the
point here), on a 516 × 516 Maxipix with a 16 × 16 ROI across the chip gaps.
"""

from __future__ import annotations

import uuid

import h5py
import numpy as np
import pytest

from analysis.dataset import read_dataset, read_results, write_dataset
from analysis.geometry import DetectorLayout, Roi, seed_geometry
from pxm.cli import main
from tests.conftest import TEST_API_KEY

SAMPLE = {"name": "cli-test-crystal", "material": "W"}


@pytest.fixture(scope="module")
def geometry():
    return seed_geometry(n_rows_px=16, n_cols_px=16, n_angles=5, rocking_step_deg=0.005, upsampling=2)


@pytest.fixture(scope="module")
def bp_uid(tiled_service, tiled_layout, geometry, tmp_path_factory):
    from devices.sim_beamline import make_sim_beamline
    from devices.testing import EncodingFrameSource
    from plans import raster_positions_um, raster_rocking_scan, rocking_angles_deg
    from pxm.runengine import make_run_engine

    _, raw, _ = tiled_layout
    raw_dir = tiled_service.config.raw_path / uuid.uuid4().hex[:8]
    raw_dir.mkdir(parents=True)
    roi = Roi.centred(DetectorLayout(), 16, 16)
    bl = make_sim_beamline(EncodingFrameSource((516, 516), fill=50), geometry=geometry, data_dir=raw_dir, roi=roi,
                           exposure_s=0.001)
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path_factory.mktemp("docs"))
    positions = raster_positions_um(2, 2, 0.1)
    angles = rocking_angles_deg(geometry.theta_bragg_deg, geometry.rocking_step_deg, geometry.n_angles)
    (uid,) = w.RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geometry, positions_um=positions,
                                      angles_deg=angles, sample=SAMPLE, exposure_s=0.001))
    return uid


def _server(tiled_service):
    return ["--tiled-uri", tiled_service.uri, "--api-key", TEST_API_KEY]


@pytest.fixture(scope="module")
def dataset_file(tiled_service, bp_uid, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "dataset.h5"
    assert main(["export", bp_uid, *_server(tiled_service), "-o", str(path)]) == 0
    return path


def test_export_rebuilds_grid_mask_geometry_and_provenance(dataset_file, bp_uid, geometry, tiled_service):
    ds = read_dataset(dataset_file)
    assert ds.layout == "grid" and ds.frames.shape == (4, 5, 16, 16)
    assert ds.geometry == geometry
    # Maxipix gaps: rows/cols 256..259 of the detector = 6..9 of the ROI starting at 250; nothing else
    assert not ds.detector_mask[6:10].any() and not ds.detector_mask[:, 6:10].any()
    assert ds.detector_mask[:6, :6].all() and int((~ds.detector_mask).sum()) == 2 * 4 * 16 - 16
    roi = Roi.centred(DetectorLayout(), 16, 16)
    np.testing.assert_array_equal(ds.detector_mask, DetectorLayout().mask()[roi.slices])
    np.testing.assert_allclose(ds.rocking_angle_deg[0] - geometry.theta_bragg_deg,
                               (np.arange(5) - 2) * 0.005, atol=1e-6)
    assert np.ptp(ds.stage_position_m[:, :, 0]) == pytest.approx(0.1e-6, rel=0.05)
    assert ds.sample["name"] == SAMPLE["name"]
    assert ds.provenance["raw_uid"] == bp_uid and ds.provenance["tiled_uri"] == tiled_service.uri


def test_reconstruct_file_writes_results_cxi_and_figures(dataset_file, tmp_path):
    res, cxi, figs = tmp_path / "results.h5", tmp_path / "out.cxi", tmp_path / "figs"
    rc = main(["reconstruct", str(dataset_file), "-o", str(res), "--recipe", "quick", "--cxi", str(cxi),
               "--figures", str(figs), "--no-progress"])
    assert rc == 0
    r = read_results(res)
    for key in ("object", "probe", "background", "error_history", "strain", "metrics", "parameters",
                "timings_s", "geometry", "provenance"):
        assert key in r, key
    assert r["object"].ndim == 3 and np.iscomplexobj(r["object"])
    assert len(r["error_history"]) == 4 and r["parameters"]["n_epie_iterations"] == 3
    assert set(r["strain"]) == {"reconstruction"}
    assert r["provenance"]["software_info"]["name"] == "pxm" and r["provenance"]["recipe_name"] == "quick"
    assert {"setup_s", "iterations_s", "write_s"} <= set(r["timings_s"])
    assert np.isfinite(r["metrics"]["final_cost"])
    pngs = sorted(figs.glob("*.png"))
    assert {p.name for p in pngs} == {"object.png", "probe.png", "strain.png", "convergence.png"}
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with h5py.File(cxi, "r") as f:
        assert int(f["cxi_version"][()]) == 160
        assert f["entry_1/image_1/data"].shape == r["object"].shape
        assert f["entry_1/image_2/data"].shape == r["probe"].shape


def test_reconstruct_run_and_publish(tiled_service, tiled_layout, bp_uid, tmp_path):
    from tiled.queries import Key

    rc = main(["reconstruct", "--run", bp_uid, *_server(tiled_service), "-o", str(tmp_path / "r.h5"),
               "--recipe", "quick", "--iterations", "2", "--ml", "1", "--publish", "--no-progress"])
    assert rc == 0
    from tiled.client import from_uri

    proc = from_uri(tiled_service.uri, api_key=TEST_API_KEY)["processed"]   # a plain client
    hits = proc.search(Key("raw_uid") == bp_uid)
    assert len(hits) >= 1
    key = sorted(hits)[-1]
    res = hits[key]
    assert key.startswith(f"{bp_uid[:8]}-recon-")
    md = res.metadata
    assert md["status"] == "complete" and md["parameters"]["n_epie_iterations"] == 2
    assert md["raw_uri"].endswith(bp_uid) and md["software"]["name"] == "pxm"
    assert any(s.name == "BraggPtychoReconstruction" for s in res.specs)
    assert {"object", "probe", "background", "strain_zz", "omega_x", "omega_y", "error"} <= set(res)
    obj = res["object"].read()
    assert obj.dtype == np.complex64 and obj.ndim == 3
    assert res["error"].read().shape == (3,)
    run = from_uri(tiled_service.uri, api_key=TEST_API_KEY)["raw"][bp_uid]
    assert run.metadata["analysis"][-1]["key"] == key
    assert run.metadata["start"]["uid"] == bp_uid                          # start left intact


def _one_line_error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert len(err.splitlines()) == 1 and "error:" in err
    return err


def test_bad_inputs_give_one_line_errors(capsys, tmp_path, dataset_file, tiled_service):
    from pxm.catalog import free_port

    err = _one_line_error(capsys, ["reconstruct", str(tmp_path / "nope.h5"), "-o", str(tmp_path / "r.h5")])
    assert "nope.h5" in err and "no such file" in err

    ds = read_dataset(dataset_file)
    bad = tmp_path / "nogeom.h5"
    write_dataset(bad, ds)
    with h5py.File(bad, "a") as f:
        del f["geometry"]
    err = _one_line_error(capsys, ["reconstruct", str(bad), "-o", str(tmp_path / "r.h5"), "--recipe", "quick"])
    assert "/geometry" in err

    err = _one_line_error(capsys, ["export", "no-such-run", *_server(tiled_service), "-o", str(tmp_path / "d.h5")])
    assert "no-such-run" in err

    down = f"http://127.0.0.1:{free_port()}"
    err = _one_line_error(capsys, ["export", "x", "--tiled-uri", down, "--api-key", "k", "-o", str(tmp_path / "d.h5")])
    assert "cannot reach" in err and down in err
    err = _one_line_error(capsys, ["reconstruct", "--run", "x", "--tiled-uri", down, "--api-key", "k",
                                   "-o", str(tmp_path / "r.h5")])
    assert "cannot reach" in err


def test_missing_start_metadata_is_named():
    from pxm.export import run_to_dataset

    class FakeRun:
        metadata = {"start": {"uid": "abc", "plan_name": "raster_rocking_scan", "pattern": {}}}

    with pytest.raises(ValueError, match="start.geometry"):
        run_to_dataset(FakeRun())


def test_reconstruct_fsc_writes_resolution_curves_and_figure(capsys, dataset_file, tmp_path):
    """``--fsc``: two half-data reconstructions; ``--prtf 6``: six random-start runs; curves and crossings in
    /resolution, resolution.png."""
    res, figs = tmp_path / "results.h5", tmp_path / "figs"
    rc = main(["reconstruct", str(dataset_file), "-o", str(res), "--recipe", "quick", "--fsc", "--fsc-seed", "3",
               "--prtf", "6", "--figures", str(figs), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "half-data resolution: FSC (½-bit) all shells" in out and "PRTF of 6 runs from random starts" in out
    r = read_results(res)
    assert {"fsc_resolution_m", "fsc_resolution_z_m", "fsc_resolution_y_m", "fsc_resolution_x_m",
            "prtf_resolution_m", "prtf_resolution_z_m", "prtf_runs", "prtf_random_floor"} <= set(r["metrics"])
    assert r["metrics"]["fsc_split_seed"] == 3 and {"fsc_s", "prtf_s"} <= set(r["timings_s"])
    assert r["metrics"]["prtf_runs"] == 6 and r["metrics"]["prtf_random_floor"] == pytest.approx(0.366, abs=2e-3)
    with h5py.File(res, "r") as f:
        for name in ("fsc", "fsc_z", "fsc_y", "fsc_x", "prtf", "prtf_z", "prtf_y", "prtf_x"):
            g = f["resolution"][name]
            assert g["value"].shape == g["frequency_per_m"].shape == g["threshold"].shape
            # a PRTF cone can hold no pixel with counts on these synthetic frames: then no finest period either
            assert "resolution_m" in g.attrs and (g.attrs["finest_period_m"] > 0 or not np.any(g["n_voxels"][:]))
    assert (figs / "resolution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reconstruct_free_fraction_records_free_cost(capsys, dataset_file, tmp_path):
    """``--free-fraction``: held-out cost per check in /free_cost and /metrics; a bad fraction is one line."""
    res = tmp_path / "results.h5"
    rc = main(["reconstruct", str(dataset_file), "-o", str(res), "--recipe", "quick", "--free-fraction", "0.2",
               "--free-unit", "frame", "--no-progress"])
    assert rc == 0
    assert "lowest free cost" in capsys.readouterr().out
    r = read_results(res)
    m = r["metrics"]
    assert m["free_fraction"] == 0.2 and m["free_unit"] == "frame" and m["free_entries"] > 0
    assert r["parameters"]["free"]["fraction"] == 0.2
    with h5py.File(res, "r") as f:
        g = f["free_cost"]
        assert list(g["iteration"][()]) == [3, 4]           # last ePIE sweep, last ML iteration (quick: 3 + 1)
        assert g["free_cost"].shape == g["work_cost"].shape == (2,) and np.all(np.isfinite(g["free_cost"][()]))
        assert g.attrs["unit"] == "frame" and g.attrs["best_iteration"] in (3, 4)
    err = _one_line_error(capsys, ["reconstruct", str(dataset_file), "-o", str(tmp_path / "r.h5"), "--recipe",
                                   "quick", "--free-fraction", "0.7", "--no-progress"])
    assert "fraction" in err and "[0, 0.5)" in err


def test_reconstruct_ml_smoothness_is_recorded(capsys, dataset_file, tmp_path):
    """``--ml-smoothness``: the prior strength reaches the ML options and the results' parameters; < 0 is one line."""
    res = tmp_path / "results.h5"
    rc = main(["reconstruct", str(dataset_file), "-o", str(res), "--recipe", "quick", "--ml-smoothness", "0.02",
               "--no-progress"])
    assert rc == 0
    r = read_results(res)
    assert r["parameters"]["ml"]["smoothness"] == 0.02
    assert r["parameters"]["ml"]["hold_probe_ramp"] is True
    assert np.all(np.isfinite(r["object"]))
    rc = main(["reconstruct", str(dataset_file), "-o", str(tmp_path / "free.h5"), "--recipe", "quick",
               "--ml-free-probe-ramp", "--no-progress"])
    assert rc == 0 and read_results(tmp_path / "free.h5")["parameters"]["ml"]["hold_probe_ramp"] is False
    err = _one_line_error(capsys, ["reconstruct", str(dataset_file), "-o", str(tmp_path / "r.h5"), "--recipe",
                                   "quick", "--ml-smoothness", "-1", "--no-progress"])
    assert "smoothness" in err


def test_reconstruct_refuses_too_few_prtf_runs_and_a_missing_gpu(capsys, dataset_file, tmp_path, monkeypatch):
    """Five runs with unrelated phases already average above 1/e; ``--backend cupy`` without a usable GPU:
    both refused before any iteration, nothing written."""
    err = _one_line_error(capsys, ["reconstruct", str(dataset_file), "-o", str(tmp_path / "r.h5"), "--prtf", "5"])
    assert "prtf_runs: 5 runs" in err and "use at least 6" in err and not (tmp_path / "r.h5").exists()
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)          # as on a machine without CuPy
    err = _one_line_error(capsys, ["reconstruct", str(dataset_file), "-o", str(tmp_path / "r.h5"),
                                   "--backend", "cupy", "--recipe", "quick"])
    assert "backend 'cupy'" in err and "no CUDA device" in err and not (tmp_path / "r.h5").exists()
