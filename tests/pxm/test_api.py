"""Issue 20 point 5: the Python API (``import pxm``) does what the commands do, through the same code.

A tiny scan (EncodingFrameSource: fast, the physics is not the point) in the session Tiled server is
exported, reconstructed, written and published through :mod:`pxm.api` and compared with the command's
results on the same data; errors are the commands' one-line messages; ``$PXM_TILED_URI`` is every
``--tiled-uri``'s default; ``pxm serve`` exposes Tiled's web UI at ``/ui/``.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import uuid
from pathlib import Path

import h5py
import httpx
import numpy as np
import pytest

import pxm
from analysis.geometry import DetectorLayout, Roi, seed_geometry
from pxm.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = {"name": "api-test-crystal", "material": "W"}
N_POSITIONS, N_ANGLES = 4, 5


@pytest.fixture(scope="module")
def bp_uid(tiled_service, tiled_layout, tmp_path_factory):
    """A 2 × 2 raster × 5-angle scan of 16 × 16 px frames in /raw."""
    from devices.sim_beamline import make_sim_beamline
    from devices.testing import EncodingFrameSource
    from plans import raster_positions_um, raster_rocking_scan, rocking_angles_deg
    from pxm.runengine import make_run_engine

    geometry = seed_geometry(n_rows_px=16, n_cols_px=16, n_angles=N_ANGLES, rocking_step_deg=0.005, upsampling=2)
    _, raw, _ = tiled_layout
    raw_dir = tiled_service.config.raw_path / uuid.uuid4().hex[:8]
    raw_dir.mkdir(parents=True)
    bl = make_sim_beamline(EncodingFrameSource((516, 516), fill=50), geometry=geometry, data_dir=raw_dir,
                           roi=Roi.centred(DetectorLayout(), 16, 16), exposure_s=0.001)
    w = make_run_engine(raw_catalog=raw, documents_dir=tmp_path_factory.mktemp("docs"))
    angles = rocking_angles_deg(geometry.theta_bragg_deg, geometry.rocking_step_deg, geometry.n_angles)
    (uid,) = w.RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geometry,
                                      positions_um=raster_positions_um(2, 2, 0.1), angles_deg=angles,
                                      sample=SAMPLE, exposure_s=0.001))
    return uid


def _server(service) -> list[str]:
    return ["--tiled-uri", service.uri, "--api-key", service.config.api_key]


def test_import_pxm_is_light_and_every_entry_point_is_documented():
    heavy = "('numpy', 'tiled', 'bluesky', 'pxm.reconstruction')"
    code = f"import sys, pxm; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.strip() == "[]"                          # `pxm --help` stays fast
    for name in pxm.__all__:
        obj = getattr(pxm, name)
        if callable(obj) and not isinstance(obj, type):
            doc = inspect.getdoc(pxm.api.__dict__[name])
            assert doc and ("Parameters" in doc or "Returns" in doc), name
    params = inspect.signature(pxm.reconstruct).parameters
    assert all(p.kind is p.KEYWORD_ONLY for n, p in params.items() if n != "data")
    assert params["recipe"].default == build_parser().parse_args(["reconstruct", "-o", "x"]).recipe == "default"


def test_shared_parameter_descriptions_are_filled_into_every_docstring():
    """The descriptions written once in ``pxm.api._SHARED_PARAMETERS`` appear, indented, where ``{{name}}`` stood."""
    for name in pxm.__all__:
        doc = inspect.getdoc(getattr(pxm, name)) or ""
        assert "{{" not in doc, name
    for func in (pxm.probe, pxm.fp_reconstruct, pxm.replay, pxm.live_consumer):
        doc = inspect.getdoc(func)
        assert "\nfigures_dir\n    Write PNG figures into this folder (``--figures``).\n" in doc, func.__name__
    doc = inspect.getdoc(pxm.simulate_general_geometry)
    assert "\ndata_dir\n    Without ``server``: the data folder" in doc and "\ntiled_uri, api_key\n    " in doc


def test_export_reconstruct_publish_are_the_api_functions_and_go_through_the_command_code(monkeypatch):
    import pxm.reconstruction

    for name in ("export", "reconstruct", "publish"):
        assert getattr(pxm, name) is getattr(pxm.api, name)
    assert pxm.reconstruction.reconstruct_dataset is not pxm.reconstruct   # the command's code, apart from the API
    seen = []
    monkeypatch.setattr("pxm.reconstruction.reconstruct_dataset", lambda *a, **k: seen.append(k) or "stub")
    assert pxm.reconstruct(_tiny_dataset(), recipe="quick") == "stub"      # the API goes through the command's code
    assert seen and seen[0]["recipe_name"] == "quick"
    pxm.reconstruct(_tiny_dataset(), recipe="quick", fsc=True, fsc_seed=2, prtf=6, prtf_seed=3)
    opts = seen[-1]["options"]                          # --fsc --fsc-seed 2 --prtf 6 --prtf-seed 3
    assert (opts.fsc, opts.fsc_split_seed, opts.prtf_runs, opts.prtf_seed) == (True, 2, 6, 3)


def _tiny_dataset():
    from testing.bragg_problem import dataset_of, make_problem

    return dataset_of(make_problem())


@pytest.mark.parametrize("case", ["no-file", "bad-uri", "no-key", "replay-no-file", "replay-publish-no-server"])
def test_errors_are_the_commands_one_line_messages(case, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PXM_TILED_API_KEY", raising=False)
    monkeypatch.delenv("PXM_TILED_URI", raising=False)
    missing = tmp_path / "nope.h5"
    if case == "no-file":
        argv, call = ["reconstruct", str(missing), "-o", str(tmp_path / "r.h5")], lambda: pxm.reconstruct(missing)
    elif case == "bad-uri":
        argv = ["runs", "--tiled-uri", "ftp://x", "--api-key", "k" * 24]
        call = lambda: pxm.connect("ftp://x", "k" * 24)                          # noqa: E731
    elif case == "no-key":
        argv, call = ["runs", "--tiled-uri", "http://127.0.0.1:9"], lambda: pxm.connect("http://127.0.0.1:9")
    elif case == "replay-no-file":
        jsonl = tmp_path / "nope.jsonl"
        argv, call = ["replay", "--jsonl", str(jsonl)], lambda: pxm.replay(jsonl)
    else:
        jsonl = tmp_path / "run.jsonl"
        argv, call = ["replay", "--jsonl", str(jsonl), "--publish"], lambda: pxm.replay(jsonl, publish=True)
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1
    with pytest.raises(pxm.PxmError) as info:
        call()
    assert str(info.value) and str(info.value) in err      # the same one line
    assert info.value.cli_line.startswith(f"pxm {info.value.command}: error: ")


def test_api_export_reconstruct_write_publish_match_the_commands(tiled_service, bp_uid, tmp_path):
    client = pxm.connect(tiled_service.uri, tiled_service.config.api_key)
    listed = {r.uid: r for r in pxm.runs(client)}
    assert listed[bp_uid].status == "complete" and listed[bp_uid].n_frames == N_POSITIONS * N_ANGLES
    assert listed[bp_uid].sample_name == SAMPLE["name"] and listed[bp_uid].plan_name == "raster_rocking_scan"

    ds = pxm.export(client, bp_uid, tmp_path / "api.h5")
    assert main(["export", bp_uid, *_server(tiled_service), "-o", str(tmp_path / "cli.h5")]) == 0
    cli_ds = pxm.load_dataset(tmp_path / "cli.h5")
    np.testing.assert_array_equal(np.asarray(ds.frames), np.asarray(cli_ds.frames))
    np.testing.assert_array_equal(pxm.load_dataset(tmp_path / "api.h5").rocking_angle_deg, cli_ds.rocking_angle_deg)
    assert ds.provenance["tiled_uri"] == cli_ds.provenance["tiled_uri"] == tiled_service.uri   # the server, as given

    outcome = pxm.reconstruct(tmp_path / "api.h5", recipe="quick", backend="numpy")
    written = pxm.write_results(outcome, tmp_path / "api-results.h5")
    assert written.results.is_file()
    assert main(["reconstruct", str(tmp_path / "cli.h5"), "--recipe", "quick", "--backend", "numpy",
                 "--no-progress", "-o", str(tmp_path / "cli-results.h5")]) in (0, 3)
    with h5py.File(tmp_path / "api-results.h5") as a, h5py.File(tmp_path / "cli-results.h5") as c:
        assert a["object"].shape == c["object"].shape
        np.testing.assert_allclose(a["object"][()], c["object"][()], rtol=1e-6, atol=1e-9)   # one pipeline

    from_run = pxm.reconstruct(client["raw"][bp_uid], recipe="quick", backend="numpy")
    np.testing.assert_allclose(from_run.result.object, outcome.result.object, rtol=1e-6, atol=1e-9)
    key = pxm.publish(from_run, client, raw_uid=bp_uid)
    from tiled.client import from_uri

    node = from_uri(tiled_service.uri, api_key=tiled_service.config.api_key)["processed"][key]
    assert node.metadata["raw_uid"] == bp_uid
    np.testing.assert_allclose(node["object"][:], from_run.result.object, rtol=1e-6)
    with pytest.raises(pxm.PxmError, match="no-such-run"):
        pxm.publish(from_run, client, raw_uid="no-such-run")


def test_tiled_uri_comes_from_the_environment_in_every_command(monkeypatch):
    monkeypatch.setenv("PXM_TILED_URI", "http://127.0.0.1:1234")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices    # every command with --tiled-uri
    with_uri = [name for name, p in sub.items() if any("--tiled-uri" in a.option_strings for a in p._actions)]
    assert {"runs", "export", "recover", "probe", "reconstruct", "replay", "demo", "fp-reconstruct"} <= set(with_uri)
    for name, p in sub.items():
        for a in p._actions:
            if "--tiled-uri" in a.option_strings:
                assert a.default == "http://127.0.0.1:1234" and not a.required, name
    monkeypatch.delenv("PXM_TILED_URI")
    assert next(a for a in build_parser()._actions if a.dest == "command").choices["runs"]._option_string_actions[
        "--tiled-uri"].required                         # without it a server command still asks for one


def test_pxm_runs_reads_uri_and_key_from_the_environment(tiled_service, bp_uid, monkeypatch):
    env = {**os.environ, "PXM_TILED_URI": tiled_service.uri, "PXM_TILED_API_KEY": tiled_service.config.api_key}
    proc = subprocess.run([sys.executable, "-m", "pxm.cli", "runs"], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert bp_uid in proc.stdout
    monkeypatch.setenv("PXM_TILED_URI", tiled_service.uri)
    monkeypatch.setenv("PXM_TILED_API_KEY", tiled_service.config.api_key)
    assert bp_uid in {r.uid for r in pxm.runs(pxm.connect())}


def test_pxm_serve_exposes_the_tiled_web_ui(tiled_service):
    r = httpx.get(f"{tiled_service.uri}/ui/", follow_redirects=True, timeout=30)
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"] and "<html" in r.text.lower()


def test_serve_starts_one_server_and_with_stops_it(tmp_path):
    service = pxm.serve(tmp_path / "data", api_key="k" * 24)
    pid = service.pid
    with service as server:                             # entering does not start a second server
        assert server.pid == pid and server.running
        assert [r.uid for r in pxm.runs(server.client())] == []
        r = httpx.get(f"{server.uri}/api/v1/search/", headers={"Authorization": f"Apikey {'k' * 24}"}, timeout=30)
        assert r.status_code == 200
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
