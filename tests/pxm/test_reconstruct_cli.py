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
from testing import TEST_API_KEY

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
    # the support the object was constrained to, and the sample the results are of (pxm polarization's gate)
    assert r["support"].shape == r["object"].shape and r["support"].dtype == bool and r["support"].any()
    from analysis.sample_record import recorded_sample

    rec = recorded_sample(res)
    assert rec.material == "W" and rec.hkl is not None and tuple(int(h) for h in rec.hkl) == (2, 2, 0)
    assert rec.sources["hkl"].startswith("/provenance") or rec.sources["hkl"].startswith("/sample")
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
    assert md["raw_key"] == f"raw/{bp_uid}" and md["software"]["name"] == "pxm"   # a Tiled key, no server URL
    assert any(s.name == "BraggPtychoReconstruction" for s in res.specs)
    assert {"object", "probe", "background", "strain_zz", "omega_x", "omega_y", "error"} <= set(res)
    obj = res["object"].read()
    assert obj.dtype == np.complex64 and obj.ndim == 3
    assert res["error"].read().shape == (3,)
    placed = read_results(tmp_path / "r.h5")["placement"]                  # where each voxel sits, as in the file
    assert md["object_placement"]["origin_m"] == pytest.approx(list(placed.origin_m), rel=1e-12)
    assert np.allclose(md["object_placement"]["axes_lab"], placed.axes_lab) and "stage" in md["object_placement"][
        "convention"]
    assert md["postprocessing_errors"] == {}
    assert md["metrics"]["r_factor"] == pytest.approx(md["metrics"]["r_factor_ml"])
    run = from_uri(tiled_service.uri, api_key=TEST_API_KEY)["raw"][bp_uid]
    assert "analysis" not in run.metadata                                 # the raw run is not written to
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
    err = _one_line_error(capsys, ["export", "x", "--tiled-uri", down, "--api-key", "k" * 16,
                                   "-o", str(tmp_path / "d.h5")])
    assert "cannot reach" in err and down in err
    err = _one_line_error(capsys, ["reconstruct", "--run", "x", "--tiled-uri", down, "--api-key", "k" * 16,
                                   "-o", str(tmp_path / "r.h5")])
    assert "cannot reach" in err


def test_missing_start_metadata_is_named():
    from pxm.run_export import run_to_dataset

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


def _off_centre_probe_file(path, geometry, centre=(0.3e-6, -0.25e-6)):
    """A Gaussian beam-plane probe on rectangular pixels whose nodes hold the P2 nodes; returns its function."""
    from analysis.bragg.probe_init import oblique_matrix
    from pxm.reconstruction import write_probe_file

    _, dr2, dr3 = geometry.voxel_size_m
    dv, dh = abs(oblique_matrix(geometry)[0, 1]) * dr3 / 3, dr2 / 2

    def probe(v_m, h_m):
        return np.exp(-0.5 * (((v_m - centre[0]) / 0.4e-6) ** 2 + ((h_m - centre[1]) / 0.3e-6) ** 2))

    v = ((np.arange(121) - 60) * dv)[:, None]
    h = ((np.arange(81) - 40) * dh)[None, :]
    write_probe_file(path, probe(v, h), pixel_size_m=(dv, dh), metadata={"raw_uid": "spiral-1"})
    return probe


def test_initial_probe_from_a_file_keeps_its_position_and_gets_no_na_mask(geometry, tmp_path):
    """The probe file is resampled as it is (off-centre by the right distance, no blur) and gets an NA mask
    only when asked; the KB model probe keeps the seed's NA mask."""
    from analysis.bragg.probe_init import p2_plane_coordinates_m
    from pxm.reconstruction import KB_NA_H_RAD, KB_NA_V_RAD, ReconstructOptions, initial_probe, probe_mask_na_rad

    probe = _off_centre_probe_file(tmp_path / "probe.h5", geometry)
    p2, source = initial_probe(geometry, probe_file=tmp_path / "probe.h5")
    pv, ph = p2_plane_coordinates_m(geometry)
    assert np.max(np.abs(p2 - probe(pv, ph))) < 1e-12
    n2, n3 = geometry.recon_shape[1:]
    assert source.startswith(f"file {tmp_path / 'probe.h5'} (run spiral-1), 2D beam plane (V × H) 121×81 px of ")
    assert source.endswith(f"resampled onto P2 ({n2}×{n3}), not re-centred, no blur, no NA mask")
    assert probe_mask_na_rad(ReconstructOptions(), from_file=True) is None
    asked = ReconstructOptions(probe_na_mask_rad=(5e-4, 4e-4))
    assert probe_mask_na_rad(asked, from_file=True) == (5e-4, 4e-4)
    assert initial_probe(geometry, probe_file=tmp_path / "probe.h5", options=asked)[1].endswith(
        "NA mask 0.0005 (V) × 0.0004 (H) rad")
    assert probe_mask_na_rad(ReconstructOptions(), from_file=False) == (KB_NA_V_RAD, KB_NA_H_RAD)
    assert initial_probe(geometry)[1].endswith(f"NA mask {KB_NA_V_RAD:g} (V) × {KB_NA_H_RAD:g} (H) rad")
    with pytest.raises(ValueError, match="probe_na_mask_rad"):
        ReconstructOptions(probe_na_mask_rad=(0.0, 1e-4))


def test_reconstruct_probe_options_are_applied_and_reported(capsys, dataset_file, tmp_path, monkeypatch):
    """--probe-file alone: no re-centring, blur or NA mask (the engine gets probe_na_rad None);
    --probe-recentre --probe-blur-px --probe-na-mask V H: all three, each said on the probe line."""
    import analysis.bragg.engine

    seen = []

    class Spy(analysis.bragg.engine.Reconstruction):
        def __init__(self, *args, **kw):
            seen.append(kw["probe_na_rad"])
            super().__init__(*args, **kw)

    monkeypatch.setattr(analysis.bragg.engine, "Reconstruction", Spy)
    _off_centre_probe_file(tmp_path / "probe.h5", read_dataset(dataset_file).geometry)
    base = ["reconstruct", str(dataset_file), "--recipe", "quick", "--probe-file", str(tmp_path / "probe.h5"),
            "--no-progress"]
    assert main([*base, "-o", str(tmp_path / "a.h5")]) == 0
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("probe: ")]
    assert len(line) == 1 and line[0].endswith("not re-centred, no blur, no NA mask") and seen == [None]
    assert main([*base, "-o", str(tmp_path / "b.h5"), "--probe-recentre", "--probe-blur-px", "0.4",
                 "--probe-na-mask", "5e-4", "4e-4"]) == 0
    line = [s for s in capsys.readouterr().out.splitlines() if s.startswith("probe: ")]
    assert line[0].endswith(", re-centred, blur σ 0.4 P2 px, NA mask 0.0005 (V) × 0.0004 (H) rad")
    assert seen[-1] == (5e-4, 4e-4)


def test_bad_probe_files_and_options_give_one_line_errors(capsys, dataset_file, tmp_path):
    base = ["reconstruct", str(dataset_file), "-o", str(tmp_path / "r.h5"), "--recipe", "quick", "--no-progress"]
    bad = tmp_path / "nan.h5"
    with h5py.File(bad, "w") as f:
        d = f.create_dataset("probe", data=np.full((8, 8), np.nan))
        d.attrs["pixel_size_m"] = 10e-9
    err = _one_line_error(capsys, [*base, "--probe-file", str(bad)])
    assert str(bad) in err and "NaN" in err
    with h5py.File(bad, "w") as f:
        f.create_dataset("probe", data=np.ones((8, 8)))
    err = _one_line_error(capsys, [*base, "--probe-file", str(bad)])
    assert "/probe@pixel_size_m: attribute missing" in err
    err = _one_line_error(capsys, [*base, "--probe-blur-px", "0.4"])
    assert "--probe-file" in err
    err = _one_line_error(capsys, [*base, "--probe-na-mask", "0", "1e-4"])
    assert "probe_na_mask_rad" in err and not (tmp_path / "r.h5").exists()
