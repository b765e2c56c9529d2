"""Data goes to the right place or the user gets one clear line before any frame (issue 15).

A demo aimed at a server that cannot read its data folder, or at the port of another pxm server, stops
before the first frame with the problem and the fix; the closing hint names a 0600 key file, never the
key; frames without a photon and scans with one rocking angle are refused with the reason.
"""

from __future__ import annotations

import stat

import numpy as np
import pytest

from analysis.dataset import BraggDataset, write_dataset
from pxm.catalog import TiledServerConfig, TiledService, check_server_reads, connect, tiled_session
from pxm.cli import main
from testing.bragg_sim import small_geometry

TEST_API_KEY = "faultsrightplace0123456789"


def _one_line_error(capsys, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc != 0, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _no_frames(*_args, **_kwargs):
    raise AssertionError("a frame was taken")


def test_demo_into_a_server_that_cannot_read_its_data_dir_stops_before_any_frame(capsys, tmp_path, monkeypatch,
                                                                                 tiled_service):
    monkeypatch.setattr("pxm.demo.run_beamtime", _no_frames)
    other = tmp_path / "other"
    key = tiled_service.config.api_key
    err = _one_line_error(capsys, ["demo", "--tiled-uri", tiled_service.uri, "--api-key", key,
                                   "--data-dir", str(other), "--no-live"])
    assert f"cannot read detector files written to {other.resolve() / 'raw'}" in err
    assert "--data-dir" in err and "pxm serve --data-dir" in err             # the fix
    assert list((other / "raw").iterdir()) == []                             # the probe file is gone
    assert not [k for k in connect(tiled_service.uri, key) if k.startswith("pxm-probe")]


def test_the_servers_own_raw_folder_passes_the_probe_and_leaves_nothing(tiled_service):
    root = connect(tiled_service.uri, tiled_service.config.api_key)
    raw_dir = tiled_service.config.raw_path
    before = set(raw_dir.iterdir())
    check_server_reads(root, raw_dir, tiled_service.uri)                      # no error: it read the token back
    assert set(raw_dir.iterdir()) == before
    assert not [k for k in root if k.startswith("pxm-probe")]


def test_demo_on_the_port_of_another_pxm_server_is_refused_before_any_frame(capsys, tmp_path, monkeypatch,
                                                                            tiled_service):
    """Same key as that server: the health check alone would be answered by it."""
    monkeypatch.setattr("pxm.demo.run_beamtime", _no_frames)
    port = int(tiled_service.uri.rsplit(":", 1)[1])
    err = _one_line_error(capsys, ["demo", "--data-dir", str(tmp_path / "d"), "--port", str(port),
                                   "--api-key", tiled_service.config.api_key, "--no-live"])
    assert f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err
    assert not (tmp_path / "d" / "tiled-config.yml").exists()


def test_the_closing_hint_names_a_private_key_file_not_the_key(capsys, tmp_path):
    key = "hintkey0123456789abcdef"
    with tiled_session(TiledServerConfig(data_dir=tmp_path / "d", api_key=key)):
        pass
    out = capsys.readouterr().out
    key_file = (tmp_path / "d").resolve() / "api-key"
    assert key not in out
    assert f"PXM_TILED_API_KEY=$(cat {key_file}) pxm serve --data-dir" in out
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_pxm_serve_prints_where_the_key_is_never_the_key(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    key = "servehygiene0123456789ab"
    proc = subprocess.Popen([sys.executable, "-m", "pxm.cli", "serve", "--data-dir", str(tmp_path / "d"),
                             "--api-key", key], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.stdout is not None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops the server" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    out = "".join(lines)
    key_file = (tmp_path / "d").resolve() / "api-key"
    assert "Ctrl-C stops the server" in out, out
    assert key not in out
    assert f"export PXM_TILED_API_KEY=$(cat {key_file})" in out and "os.environ['PXM_TILED_API_KEY']" in out
    assert key_file.read_text().strip() == key and stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_catalog_password_is_not_printed():
    from pxm.catalog import redacted_uri

    assert redacted_uri("postgresql+asyncpg://pxm:s3cret@db:5432/pxm") == "postgresql+asyncpg://pxm:***@db:5432/pxm"
    assert redacted_uri("sqlite:////data/catalog.db") == "sqlite:////data/catalog.db"


def _dataset(tmp_path, *, n_angles: int, counts: float):
    g = small_geometry(n_px=16, n_angles=n_angles)
    n_pos = 4
    offsets = (np.arange(n_angles) - (n_angles - 1) / 2) * g.rocking_step_deg
    angles = np.broadcast_to(g.theta_bragg_deg + offsets, (n_pos, n_angles)).copy()
    xy = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float) * 1e-7
    stage = np.zeros((n_pos, n_angles, 3))
    stage[..., :2] = xy[:, None, :]
    frames = np.full((n_pos, n_angles, 16, 16), counts, np.float32)
    ds = BraggDataset(frames=frames, rocking_angle_deg=angles, stage_position_m=stage,
                      detector_mask=np.ones((16, 16), bool), geometry=g, sample={"name": "test"})
    path = tmp_path / "dataset.h5"
    write_dataset(path, ds)
    return path


@pytest.mark.parametrize("case", ["no-photons", "one-angle"])
def test_reconstruct_refuses_data_with_nothing_to_reconstruct(case, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("pxm.reconstruction.initial_probe", _no_frames)          # refused before any computing
    path = _dataset(tmp_path, n_angles=1 if case == "one-angle" else 5, counts=0.0 if case == "no-photons" else 3.0)
    err = _one_line_error(capsys, ["reconstruct", str(path), "-o", str(tmp_path / "r.h5"), "--no-progress"])
    assert {"no-photons": "no photons", "one-angle": "one rocking angle"}[case] in err
    assert not (tmp_path / "r.h5").exists()


def test_a_bragg_scan_plan_with_one_rocking_angle_is_refused_before_moving(tmp_path):
    from bluesky import RunEngine

    from devices.sim_beamline import make_sim_beamline
    from devices.testing import EncodingFrameSource
    from plans.bragg import raster_rocking_scan
    from testing.concurrent_scan import scan_geometry

    g = scan_geometry(1)
    bl = make_sim_beamline(EncodingFrameSource((16, 16)), geometry=g, data_dir=tmp_path, exposure_s=0.001)
    docs: list = []
    RE = RunEngine({})
    RE.subscribe(lambda name, doc: docs.append(name))
    with pytest.raises(ValueError, match="one rocking angle"):
        RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=g, positions_um=[[0, 0]],
                               angles_deg=[g.theta_bragg_deg], sample={"name": "x", "material": "W"},
                               exposure_s=0.001))
    assert docs == []


def test_demo_with_one_angle_is_refused_before_a_server_starts(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(TiledService, "start", _no_frames)
    err = _one_line_error(capsys, ["demo", "--data-dir", str(tmp_path), "--angles", "1", "--api-key", TEST_API_KEY])
    assert "angle" in err
