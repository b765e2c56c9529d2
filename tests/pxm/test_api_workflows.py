"""Issue 20 point 5: the API functions of ``probe``, ``recover``, the exchange formats, ``polarization`` and
``fp-reconstruct`` give what their commands give on the same input, and fail with the commands' one line.

Each test runs the command (:func:`pxm.cli.main`) and the API function on the same data and compares the
files or arrays they produce; small sizes (12-point spiral, 3 × 3 FP grid of 16 px, a 2 × 2 × 3 scan).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

import pxm
from pxm.cli import main

REPO = Path(__file__).resolve().parents[2]
PTYPY_SUBSET = REPO / "tests" / "data" / "ptypy_bragg_subset.h5"


def _server(service) -> list[str]:
    return ["--tiled-uri", service.uri, "--api-key", service.config.api_key]


def _raw_dir(service) -> Path:
    d = service.config.raw_path / uuid.uuid4().hex[:8]
    d.mkdir(parents=True)
    return d


# ------------------------------------------------------------------------------------------ probe
@pytest.fixture(scope="module")
def spiral_uid(tiled_service, tiled_layout, tmp_path_factory):
    """A 12-point Siemens-star spiral of 64 × 64 px frames in /raw."""
    from pxm.runengine import make_run_engine, run_uids
    from testing.spiral_scan import spiral_beamline, spiral_plan

    _, raw, _ = tiled_layout
    fwd, geom = spiral_beamline(_raw_dir(tiled_service))
    wiring = make_run_engine(raw_catalog=raw, documents_dir=tmp_path_factory.mktemp("spiral-docs"),
                             beam_signal=fwd.monitor.current)
    (uid,) = run_uids(wiring.RE(spiral_plan(fwd, geom)))
    return uid


def test_probe_file_of_the_api_equals_the_commands(tiled_service, spiral_uid, tmp_path, capsys):
    from analysis.bragg.probe_file import read_probe_file

    assert main(["probe", spiral_uid, *_server(tiled_service), "--iterations", "5", "-o",
                 str(tmp_path / "cli.h5")]) == 0
    client = pxm.connect(tiled_service.uri, tiled_service.config.api_key)
    got = pxm.probe(client, spiral_uid, iterations=5, output=tmp_path / "api.h5")
    assert got.path == tmp_path / "api.h5" and got.metadata["raw_uid"] == spiral_uid
    cli, api = read_probe_file(tmp_path / "cli.h5"), read_probe_file(tmp_path / "api.h5")
    np.testing.assert_array_equal(api.probe, cli.probe)
    np.testing.assert_array_equal(api.probe, got.probe)
    assert api.spacing_m == cli.spacing_m == pytest.approx((got.pixel_size_m,) * 2)
    assert api.metadata == {**cli.metadata}             # raw_uid, algorithm, sweeps, tiled_uri: the same record
    assert f"final error {got.error_history[-1]:.4g}" in capsys.readouterr().out
    assert pxm.probe(client, spiral_uid, iterations=2, output=None).path is None


def test_probe_of_a_run_that_is_not_a_spiral_is_the_commands_error(tiled_service, tiled_layout, tmp_path, capsys):
    uid = _tiny_bragg_run(tiled_service, tiled_layout, tmp_path)
    assert main(["probe", uid, *_server(tiled_service), "-o", str(tmp_path / "p.h5")]) == 1
    err = capsys.readouterr().err.strip()
    with pytest.raises(pxm.PxmError) as info:
        pxm.probe(pxm.connect(tiled_service.uri, tiled_service.config.api_key), uid, output=None)
    assert info.value.cli_line == err and "expected 'spiral_probe_scan'" in err


def _tiny_bragg_run(service, layout, docs: Path) -> str:
    """A 2 × 2 raster × 3-angle scan of 16 × 16 px frames (EncodingFrameSource); its JSONL in ``docs``."""
    from analysis.geometry import DetectorLayout, Roi, seed_geometry
    from devices.sim_beamline import make_sim_beamline
    from devices.testing import EncodingFrameSource
    from plans import raster_positions_um, raster_rocking_scan, rocking_angles_deg
    from pxm.runengine import make_run_engine

    geometry = seed_geometry(n_rows_px=16, n_cols_px=16, n_angles=3, rocking_step_deg=0.005, upsampling=2)
    _, raw, _ = layout
    bl = make_sim_beamline(EncodingFrameSource((516, 516), fill=50), geometry=geometry, data_dir=_raw_dir(service),
                           roi=Roi.centred(DetectorLayout(), 16, 16), exposure_s=0.001)
    w = make_run_engine(raw_catalog=raw, documents_dir=docs)
    angles = rocking_angles_deg(geometry.theta_bragg_deg, geometry.rocking_step_deg, geometry.n_angles)
    (uid,) = w.RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geometry,
                                      positions_um=raster_positions_um(2, 2, 0.1), angles_deg=angles,
                                      sample={"name": "api-workflow-crystal"}, exposure_s=0.001))
    return uid


# ------------------------------------------------------------------------------------------ recover
def test_recover_reports_as_the_command_and_adds_a_lost_run(tiled_service, tiled_layout, tmp_path, capsys):
    docs = tmp_path / "docs"
    uid = _tiny_bragg_run(tiled_service, tiled_layout, docs)
    _, raw, _ = tiled_layout
    raw.delete_contents(uid, recursive=True, external_only=False)       # the outage: Tiled lost the run
    assert uid not in raw
    client = pxm.connect(tiled_service.uri, tiled_service.config.api_key)
    dry = pxm.recover_runs(client, documents=docs, settle_s=0, dry_run=True)
    assert main(["recover", *_server(tiled_service), "--documents", str(docs), "--settle-s", "0", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == dry.lines()         # the command's report, line for line
    assert [r.action for r in dry.results] == ["would add"] and uid not in raw

    done = pxm.recover_runs(client, documents=docs, settle_s=0)
    assert done.tally == {"added": 1} and not done.failed
    assert done.results[0].counts.primary_frames == 2 * 2 * 3
    assert {r.uid: r.n_frames for r in pxm.runs(client)}[uid] == 2 * 2 * 3
    assert main(["recover", *_server(tiled_service), "--documents", str(docs), "--settle-s", "0"]) == 0
    assert capsys.readouterr().out.splitlines() == pxm.recover_runs(client, documents=docs, settle_s=0).lines()
    assert pxm.recover_runs(client, documents=docs, settle_s=0).tally == {"ok": 1}     # twice changes nothing


def test_recover_without_documents_is_the_commands_error(tiled_service, tmp_path, capsys):
    assert main(["recover", *_server(tiled_service), "--data-dir", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err.strip()
    with pytest.raises(pxm.PxmError) as info:
        pxm.recover_runs(pxm.connect(tiled_service.uri, tiled_service.config.api_key), data_dir=tmp_path / "none")
    assert info.value.cli_line == err and "is not a folder" in err


# ------------------------------------------------------------------------------------------ formats
def _dataset_file(path: Path) -> None:
    from analysis.dataset import BraggDataset, write_dataset
    from analysis.geometry import seed_geometry

    geom = seed_geometry(n_rows_px=8, n_cols_px=6, n_angles=3, upsampling=2)
    rng = np.random.default_rng(2)
    angles = geom.theta_bragg_deg + (np.arange(3) - 1) * geom.rocking_step_deg
    write_dataset(path, BraggDataset(
        frames=rng.poisson(4.0, size=(2, 3, 8, 6)).astype(np.float32), rocking_angle_deg=np.tile(angles, (2, 1)),
        stage_position_m=np.repeat(np.array([[0.0, 0.0, 0.0], [3e-7, 0.0, 0.0]])[:, None], 3, axis=1),
        detector_mask=np.ones((8, 6), bool), geometry=geom, sample={"name": "Au crystal"}))


def test_cxi_and_vtk_of_the_api_equal_the_commands(tmp_path, capsys):
    from analysis.bragg.operators.scan import object_placement
    from analysis.dataset import read_dataset, write_results
    from analysis.geometry import seed_geometry

    _dataset_file(tmp_path / "d.h5")
    assert main(["export-cxi", str(tmp_path / "d.h5"), "-o", str(tmp_path / "cli.cxi")]) == 0
    cxi = pxm.export_cxi(tmp_path / "d.h5", tmp_path / "api.cxi")
    assert cxi.path == tmp_path / "api.cxi" and Path(cxi) == cxi.path and (cxi.n_frames, cxi.frame_shape) == (6, (8, 6))
    assert capsys.readouterr().out.splitlines() == [ln.replace("api.cxi", "cli.cxi") for ln in cxi.lines()]
    with h5py.File(tmp_path / "cli.cxi") as c, h5py.File(tmp_path / "api.cxi") as a:
        np.testing.assert_array_equal(a["entry_1/data_1/data"][()], c["entry_1/data_1/data"][()])
    assert main(["import-cxi", str(tmp_path / "cli.cxi"), "-o", str(tmp_path / "cli-back.h5")]) == 0
    imported = pxm.import_cxi(tmp_path / "api.cxi", tmp_path / "api-back.h5")
    assert capsys.readouterr().out.splitlines()[:-1] == imported.lines()     # the command prints the API's summary
    back, cli_back = imported.dataset, read_dataset(tmp_path / "cli-back.h5")
    np.testing.assert_array_equal(back.frames, cli_back.frames)
    np.testing.assert_array_equal(read_dataset(tmp_path / "api-back.h5").stage_position_m, cli_back.stage_position_m)
    assert back.geometry == cli_back.geometry == read_dataset(tmp_path / "d.h5").geometry

    geom = seed_geometry(n_rows_px=8, n_cols_px=6, n_angles=3, upsampling=2)
    obj = np.ones((4, 3, 2), np.complex64)
    write_results(tmp_path / "r.h5", object=obj, probe=obj[0], voxel_size_m=geom.voxel_size_m,
                  placement=object_placement(geom, np.zeros(3)))
    assert main(["export-vtk", str(tmp_path / "r.h5"), "-o", str(tmp_path / "cli.vti")]) == 0
    vtk = pxm.export_vtk(tmp_path / "r.h5", tmp_path / "api.vti")
    assert vtk.shape == (4, 3, 2) and vtk.path == tmp_path / "api.vti"
    assert (tmp_path / "api.vti").read_bytes() == (tmp_path / "cli.vti").read_bytes()
    with pytest.raises(pxm.PxmError, match=r"unknown VTK suffix '\.png'") as info:
        pxm.export_vtk(tmp_path / "r.h5", tmp_path / "o.png")
    assert info.value.command == "export-vtk"


def test_import_ptypy_bragg_of_the_api_equals_the_commands(tmp_path):
    from analysis.bragg.probe_file import read_probe_file
    from analysis.dataset import read_dataset

    assert main(["import-ptypy-bragg", str(PTYPY_SUBSET), "-o", str(tmp_path / "cli.h5")]) == 0
    summary = pxm.import_ptypy_bragg(PTYPY_SUBSET, tmp_path / "api.h5")
    assert summary.probe_path == tmp_path / "api_probe.h5" and summary.upsampling == 3
    np.testing.assert_array_equal(read_dataset(tmp_path / "api.h5").frames, read_dataset(tmp_path / "cli.h5").frames)
    np.testing.assert_array_equal(read_probe_file(tmp_path / "api_probe.h5").probe,
                                  read_probe_file(tmp_path / "cli_probe.h5").probe)
    with pytest.raises(pxm.PxmError, match="not a ptypy Bragg3dSimScan export"):
        pxm.import_ptypy_bragg(tmp_path / "api.h5", tmp_path / "x.h5")


# ------------------------------------------------------------------------------------------ polarization
def _domain_results(path: Path, **write_kw) -> Path:
    """A results file whose strain map is BaTiO3 c/a domains seen through (002); one unmeasured layer."""
    from analysis.dataset import write_results
    from analysis.ferro import equilibrium_polarization, projected_strain, spontaneous_strain
    from analysis.strain import StrainMaps

    ps = float(np.linalg.norm(equilibrium_polarization("BaTiO3", np.zeros((3, 3)), np.array([0.0, 0.0, 0.25]))))
    eps = np.full((4, 6, 3), float(projected_strain(spontaneous_strain(np.array([0.0, 0.0, ps]), "BaTiO3"),
                                                    (0, 0, 2))))
    eps[:, 3:, :] = float(projected_strain(spontaneous_strain(np.array([ps, 0.0, 0.0]), "BaTiO3"), (0, 0, 2)))
    mask = np.ones(eps.shape, bool)
    mask[0] = False
    eps[0] = np.nan
    maps = StrainMaps(eps_zz=eps, omega_x_rad=np.zeros_like(eps), omega_y_rad=np.zeros_like(eps),
                      amplitude=np.ones_like(eps), mask=mask, voxel_size_m=(20e-9,) * 3, origin_m=(0.0,) * 3,
                      frame="sample")
    write_results(path, object=np.ones(eps.shape, np.complex64), probe=np.ones((4, 4), np.complex64),
                  voxel_size_m=(20e-9,) * 3, strain=maps, **{"provenance": {"raw_uid": "0" * 32}, **write_kw})
    return path


@pytest.fixture
def domain_results(tmp_path) -> Path:
    return _domain_results(tmp_path / "results.h5")


def test_polarization_of_the_api_equals_the_commands(domain_results, tmp_path, capsys):
    argv = ["polarization", str(domain_results), "--material", "BaTiO3", "--hkl", "0", "0", "2"]
    assert main([*argv, "-o", str(tmp_path / "cli.h5")]) == 0
    got = pxm.polarization_maps(domain_results, material="BaTiO3", hkl=(0, 0, 2), output=tmp_path / "api.h5")
    assert got.path == tmp_path / "api.h5"
    out, err = capsys.readouterr()
    assert err.strip() == f"pxm polarization: warning: {got.warning}"   # the file records no material to check
    with h5py.File(tmp_path / "cli.h5") as c, h5py.File(tmp_path / "api.h5") as a:
        cli_p, api_p = c[got.group]["magnitude_c_per_m2"][()], a[got.group]["magnitude_c_per_m2"][()]
    np.testing.assert_array_equal(api_p, cli_p)
    assert np.isnan(api_p[0]).all() and np.isfinite(api_p[1:]).all()       # the unmeasured layer stays empty
    assert got.summary["voxels"] == 3 * 6 * 3
    assert f"mean |P| = {got.summary['mean_abs_p_c_per_m2']:.4f} C/m²" in out
    default = pxm.polarization_maps(domain_results, material="BaTiO3", hkl=(0, 0, 2))
    assert default.path == domain_results.with_name("results-polarization-BaTiO3-002.h5")


def test_polarization_material_check_is_the_commands_error(tmp_path, capsys):
    from analysis.geometry import seed_geometry

    w220 = _domain_results(tmp_path / "w220.h5", geometry=seed_geometry(),    # a W (220) scan's results
                           provenance={"raw_uid": "0" * 32, "sample_name": "W-1Re foil (simulated)"})
    argv = ["polarization", str(w220), "--material", "BaTiO3", "--hkl", "0", "0", "2"]
    assert main([*argv, "-o", str(tmp_path / "cli.h5")]) == 1
    err = capsys.readouterr().err.strip()
    with pytest.raises(pxm.PxmError) as info:
        pxm.polarization_maps(w220, material="BaTiO3", hkl=(0, 0, 2), output=tmp_path / "api.h5")
    assert info.value.cli_line == err and "--force" in err
    assert not (tmp_path / "api.h5").exists() and not (tmp_path / "cli.h5").exists()
    forced = pxm.polarization_maps(w220, material="BaTiO3", hkl=(0, 0, 2), output=tmp_path / "api.h5",
                              force=True)
    assert forced.warning and forced.path.is_file()


# ------------------------------------------------------------------------------------------ FP-DFXM
def test_fp_reconstruct_of_the_api_equals_the_commands(tiled_service, tiled_layout, tmp_path):
    from tiled.queries import Key

    uid = pxm.simulate_fp_dfxm(tiled_service, n_px=16, grid=3, step_px=3)
    client = pxm.connect(tiled_service.uri, tiled_service.config.api_key)
    assert client["raw"][uid].metadata["start"]["plan_name"] == "fp_dfxm_scan"
    assert main(["fp-reconstruct", "--run", uid, *_server(tiled_service), "--iterations", "5"]) == 0
    (cli_key,) = client["processed"].search(Key("raw_uid") == uid)
    got = pxm.fp_reconstruct(client, uid, iterations=5)
    assert got.published_key is not None and got.published_key != cli_key
    processed = client["processed"]
    np.testing.assert_array_equal(processed[got.published_key]["object"][:], processed[cli_key]["object"][:])
    np.testing.assert_allclose(processed[cli_key]["object"][:], got.result.result.object.astype(np.complex64))
    assert pxm.fp_reconstruct(client, uid, iterations=2, publish=False).published_key is None
    assert len(processed.search(Key("raw_uid") == uid)) == 2
    with pytest.raises(pxm.PxmError, match="is not fp_dfxm_scan"):
        pxm.fp_reconstruct(client, _tiny_bragg_run(tiled_service, tiled_layout, tmp_path), publish=False)


# ------------------------------------------------------------------------------------------ live consumer
def test_live_consumer_of_the_api_equals_the_commands(tiled_service, tiled_layout, tmp_path):
    """One scan published through a bluesky 0MQ proxy, consumed by ``pxm live-consumer --once`` (a process) and
    by :func:`pxm.live_consumer` (a thread) at once: both publish the same final result for the run."""
    import os
    import subprocess
    import sys
    import threading
    import time

    from bluesky.callbacks.zmq import Proxy
    from tiled.queries import Key

    from analysis.geometry import DetectorLayout, Roi, seed_geometry
    from devices.sim_beamline import make_sim_beamline
    from devices.testing import EncodingFrameSource
    from plans import raster_positions_um, raster_rocking_scan, rocking_angles_deg
    from pxm.catalog import free_port
    from pxm.runengine import make_run_engine
    from pxm.transport import ZmqPublisher

    pin, pout = free_port(), free_port()
    threading.Thread(target=Proxy(pin, pout).start, daemon=True).start()
    command = subprocess.Popen([sys.executable, "-m", "pxm.cli", "live-consumer", "--zmq", f"127.0.0.1:{pout}",
                                "--once", *_server(tiled_service), "--iterations", "3", "--timeout", "120"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    client = pxm.connect(tiled_service.uri, tiled_service.config.api_key)
    got: list = []
    api = threading.Thread(target=lambda: got.append(pxm.live_consumer(zmq=f"127.0.0.1:{pout}", client=client,
                                                                       iterations=3, timeout_s=120)), daemon=True)
    api.start()
    publisher = None
    try:
        assert "listening" in (command.stdout.readline() if command.stdout else "")
        time.sleep(1.5)                                 # 0MQ slow joiner: let both SUB sockets connect
        geometry = seed_geometry(n_rows_px=16, n_cols_px=16, n_angles=5, rocking_step_deg=0.005, upsampling=2)
        _, raw, _ = tiled_layout
        bl = make_sim_beamline(EncodingFrameSource((516, 516), fill=50), geometry=geometry,
                               data_dir=_raw_dir(tiled_service), roi=Roi.centred(DetectorLayout(), 16, 16),
                               exposure_s=0.001)
        publisher = ZmqPublisher(f"127.0.0.1:{pin}")
        time.sleep(1.0)                                 # and the publisher's connection to the proxy
        w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path / "docs", extra_callbacks=(publisher,))
        angles = rocking_angles_deg(geometry.theta_bragg_deg, geometry.rocking_step_deg, geometry.n_angles)
        (uid,) = w.RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geometry,
                                          positions_um=raster_positions_um(2, 2, 0.1), angles_deg=angles,
                                          sample={"name": "api-live-crystal"}, exposure_s=0.001))
        out, err = command.communicate(timeout=180)
        api.join(timeout=180)
    finally:
        command.kill()
        if publisher is not None:
            publisher.close()
    assert command.returncode == 0, err
    assert not api.is_alive() and got, "pxm.live_consumer did not return after the run's stop"
    (summary,) = got[0]
    assert summary["uid"] == uid and summary["metrics"]["n_frames_used"] == 2 * 2 * 5
    assert uid in out and summary["final_key"] in {*client["processed"].search(Key("raw_uid") == uid)}
    processed = client["processed"]
    finals = [k for k in processed.search(Key("raw_uid") == uid)
              if processed[k].metadata.get("status") == "complete" and "object" in processed[k]]
    assert len(finals) == 2 and summary["final_key"] in finals           # the command's and the API's
    a, c = (processed[k]["object"][:] for k in finals)
    scale = float(np.abs(a).max())
    assert scale > 0 and float(np.abs(a - c).max()) <= 1e-4 * scale    # float32 rounding (other FFT plans)


def test_live_consumer_needs_one_source():
    with pytest.raises(pxm.PxmError, match="give one source") as info:
        pxm.live_consumer()
    assert info.value.command == "live-consumer"


def test_no_api_function_is_hidden_by_a_module_of_the_same_name():
    """``import pxm.recover`` would replace a function ``pxm.recover`` by the module: names stay apart."""
    modules = {p.stem for p in (REPO / "pxm").glob("*.py")} | {p.name for p in (REPO / "pxm").iterdir() if p.is_dir()}
    assert not modules & set(pxm.__all__)


# ------------------------------------------------------------------------------------------ remote beamtime
@pytest.mark.slow                                       # a small beamtime: ~20 s of CPU
def test_simulate_beamtime_into_a_running_server_by_url(tiled_service, tmp_path, capsys):
    """``pxm.simulate_beamtime(tiled_uri=..., data_dir=...)`` is ``pxm demo --tiled-uri``: a data folder the server
    cannot read is refused with the command's line before any scan; the server's own folder takes the runs."""
    uri, key = tiled_service.uri, tiled_service.config.api_key
    elsewhere = tmp_path / "elsewhere"
    assert main(["demo", "--tiled-uri", uri, "--api-key", key, "--data-dir", str(elsewhere), "--no-live"]) == 1
    err = capsys.readouterr().err.strip()
    with pytest.raises(pxm.PxmError) as info:
        pxm.simulate_beamtime(tiled_uri=uri, api_key=key, data_dir=elsewhere, live=False)
    assert info.value.cli_line == err and "cannot read detector files" in err
    assert not list(elsewhere.rglob("*.jsonl"))          # no scan ran

    beamtime = pxm.simulate_beamtime(tiled_uri=uri, api_key=key, data_dir=tiled_service.config.data_dir,
                                     n_raster=2, n_angles=17, roi_px=(32, 32), n_spiral=10, probe_iterations=2,
                                     live=False)
    listed = {r.uid: r for r in pxm.runs(pxm.connect(uri, key))}
    bragg = listed[beamtime.uids["bragg_ptychography"]]
    assert bragg.status == "complete" and bragg.n_frames == 2 * 2 * 17
    assert listed[beamtime.uids["forward_ptychography"]].n_frames == 10
    assert beamtime.probe_file is not None and beamtime.probe_file.is_file()
