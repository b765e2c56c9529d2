"""The data folder across processes: ``scan_id`` keeps counting, and its files are private (issue 15, hygiene).

Each case runs pxm's own wiring (:func:`pxm.catalog.tiled_session` as in ``pxm demo``,
:func:`pxm.runengine.make_run_engine`, the simulated Maxipix) in a fresh Python process: the
umask and the counter are per process, which is what is under test.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from pxm.datadir import GROUP_ACCESS_ENV, data_umask, dir_mode, file_mode, group_access, secure_dir
from pxm.runengine import persistent_scan_id_source

ROOT = Path(__file__).resolve().parents[2]

# A few runs with pxm's RunEngine wiring on DATA_DIR into an existing server; prints their scan_ids.
SCANS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import bluesky.plans as bp
    from analysis.geometry import BraggGeometry
    from devices.sim_beamline import make_sim_beamline
    from devices.testing import EncodingFrameSource
    from pxm.catalog import connect, ensure_layout
    from pxm.runengine import make_run_engine

    uri, key, data_dir, n_runs = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    raw, _ = ensure_layout(connect(uri, key))
    geom = BraggGeometry(energy_kev=8.0, d_spacing_m=1.119e-10, detector_distance_m=1.4, n_rows_px=16,
                         n_cols_px=16, n_angles=3, rocking_step_deg=0.01, bragg_angle_deg=43.9, hkl=(2, 2, 0))
    bl = make_sim_beamline(EncodingFrameSource((16, 16)), geometry=geom, data_dir=data_dir / "raw",
                           exposure_s=0.001, simulate_exposure=False)
    w = make_run_engine(raw_catalog=raw, documents_dir=data_dir / "documents")
    ids = [raw[uid].metadata["start"]["scan_id"] for _ in range(n_runs) for uid in w.RE(bp.count([bl.monitor]))]
    print(json.dumps(ids))
""")

# A tiny demo-like beamtime: embedded server started by tiled_session on DATA_DIR, one detector scan.
BEAMTIME = textwrap.dedent("""
    import sys
    from pathlib import Path
    import bluesky.plans as bp
    from analysis.geometry import BraggGeometry
    from devices.sim_beamline import make_sim_beamline
    from devices.testing import EncodingFrameSource
    from pxm.catalog import TiledServerConfig, tiled_session
    from pxm.runengine import make_run_engine

    server = TiledServerConfig(data_dir=Path(sys.argv[1]), api_key="pxmtestkey0123456789")
    geom = BraggGeometry(energy_kev=8.0, d_spacing_m=1.119e-10, detector_distance_m=1.4, n_rows_px=16,
                         n_cols_px=16, n_angles=3, rocking_step_deg=0.01, bragg_angle_deg=43.9, hkl=(2, 2, 0))
    with tiled_session(server) as s:
        bl = make_sim_beamline(EncodingFrameSource((16, 16)), geometry=geom, data_dir=server.raw_path,
                               exposure_s=0.001, simulate_exposure=False)
        w = make_run_engine(raw_catalog=s.raw, documents_dir=server.data_dir / "documents")
        (uid,) = w.RE(bp.count([bl.detector, bl.monitor], num=3))
        assert s.raw[uid]["primary"]["mpx_image"][:].shape == (3, 16, 16)
""")


def _python(script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> str:
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _scan_ids(service, data_dir: Path, n_runs: int) -> list[int]:
    out = _python(SCANS, service.uri, service.config.api_key, str(data_dir), str(n_runs))
    return list(json.loads(out.strip().splitlines()[-1]))


def test_scan_id_persists_per_data_folder_across_processes(tiled_service, tmp_path):
    folder_a, folder_b = tmp_path / "a", tmp_path / "b"
    assert _scan_ids(tiled_service, folder_a, 2) == [1, 2]
    assert _scan_ids(tiled_service, folder_a, 1) == [3]          # a second process on the same data folder
    assert _scan_ids(tiled_service, folder_b, 1) == [1]          # another data folder starts at 1
    assert (folder_a / "documents" / "scan_id").read_text() == "3\n"


def test_scan_id_counter_is_shared_safely_by_concurrent_run_engines(tmp_path):
    """Two sources on one file (as two processes' RunEngines would be) never hand out a number twice."""
    path = tmp_path / "scan_id"
    got: list[int] = []
    lock = threading.Lock()

    def take(n: int) -> None:
        source = persistent_scan_id_source(path)
        md: dict = {}
        for _ in range(n):
            md["scan_id"] = source(md)
            with lock:
                got.append(md["scan_id"])

    threads = [threading.Thread(target=take, args=(40,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 121))
    # RE.md["scan_id"] set by hand above the file's count moves the counter on
    assert persistent_scan_id_source(path)({"scan_id": 500}) == 501
    path.write_text("garbage")
    with pytest.raises(ValueError, match="last scan_id"):
        persistent_scan_id_source(path)({})


def _modes(root: Path) -> tuple[dict[str, int], dict[str, int]]:
    dirs = {".": stat.S_IMODE(root.stat().st_mode)}
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = Path(dirpath) / d
            dirs[str(p.relative_to(root))] = stat.S_IMODE(p.stat().st_mode)
        for f in filenames:
            p = Path(dirpath) / f
            if p.is_file():
                files[str(p.relative_to(root))] = stat.S_IMODE(p.stat().st_mode)
    return dirs, files


@pytest.mark.parametrize("group", [False, True], ids=["private", "group"])
def test_data_folder_and_files_are_private_unless_group_access(tmp_path, group):
    data_dir = tmp_path / "pxm-data"
    env = {GROUP_ACCESS_ENV: "1" if group else "0"}
    _python(BEAMTIME, str(data_dir), env=env)
    dirs, files = _modes(data_dir)
    want_dir, want_file = (0o750, 0o640) if group else (0o700, 0o600)
    kinds = {Path(f).suffix for f in files}
    # detector HDF5, JSONL, catalog, Tiled's tables, log, config; folders raw/, documents/, data/ (arrays)
    assert {".h5", ".jsonl", ".db", ".sqlite", ".log", ".yml"} <= kinds, sorted(files)
    assert {"raw", "documents", "documents/tiled-backup", "data"} <= set(dirs), sorted(dirs)
    assert {k: oct(v) for k, v in dirs.items() if v != want_dir} == {}
    # the server config and the key file hold the API key: 0600 even with group access
    key_files = ("tiled-config.yml", "api-key")
    assert {k: oct(v) for k, v in files.items() if v != (0o600 if k in key_files else want_file)} == {}


def test_group_access_switch(monkeypatch, tmp_path):
    monkeypatch.delenv(GROUP_ACCESS_ENV, raising=False)
    assert (group_access(), dir_mode(), file_mode(), data_umask()) == (False, 0o700, 0o600, 0o077)
    monkeypatch.setenv(GROUP_ACCESS_ENV, "yes")
    assert (group_access(), dir_mode(), file_mode(), data_umask()) == (True, 0o750, 0o640, 0o027)
    assert group_access(False) is False
    monkeypatch.setenv(GROUP_ACCESS_ENV, "maybe")
    with pytest.raises(ValueError, match=GROUP_ACCESS_ENV):
        group_access()
    # secure_dir sets the mode of what it creates whatever the umask, and leaves existing folders alone
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    old = os.umask(0o002)
    try:
        secure_dir(existing / "a" / "b", group=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755
    assert stat.S_IMODE((existing / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((existing / "a" / "b").stat().st_mode) == 0o700
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        secure_dir(tmp_path / "file", group=False)
