"""A Tiled outage and a killed scan have a way back (issue 15, "Recovery"): ``pxm recover``.

Real processes on loopback: a ``tiled serve`` process, a scan process (a real RunEngine with pxm's wiring,
TiledWriter + JSONL, over the real ``raster_rocking_scan`` plan, frames encoding their sequence number:
``python -m testing.concurrent_scan``). Each case kills one of them with SIGKILL mid-scan, then checks what
a user sees (``pxm runs``, ``pxm export``), runs ``pxm recover`` and checks that frames on disk = frames in
Tiled, no event row is duplicated, every run has a stop document, ``run["primary"].read()`` works, and that a
second ``pxm recover`` changes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from analysis.dataset import read_dataset
from devices.maxipix import COMPLETE_PATH
from pxm.catalog import TiledServerConfig, TiledService, connect, ensure_layout, tiled_run_counts
from pxm.cli import main
from testing.concurrent_scan import check_run_complete

KEY = "recovertest0123456789abcdef01234"
N_RASTER, N_ANGLES = 4, 8
N_FRAMES = N_RASTER * N_RASTER * N_ANGLES            # 128 frames: ~10 s of scan at batch 1
REPO = Path(__file__).resolve().parents[2]
SCAN_TIMEOUT_S = 120.0


def _start_scan(uri: str, api_key: str, data_dir: Path, seed: int) -> subprocess.Popen:
    """The scan process; TiledWriter gives up on a dead server after ~2 s instead of 45 s (bounded test)."""
    env = {**os.environ, "PXM_TILED_API_KEY": api_key, "TILED_RETRY_ATTEMPTS": "2", "TILED_RETRY_TIMEOUT": "2",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "testing.concurrent_scan", "--tiled-uri", uri, "--data-dir",
                             str(data_dir), "--raster", str(N_RASTER), "--angles", str(N_ANGLES), "--seed", str(seed)],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _jsonl_docs(path: Path) -> list[tuple[str, dict]]:
    docs = []
    for line in path.read_text().splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:                 # a line cut short by SIGKILL
            continue
        docs.append((d["name"], d["doc"]))
    return docs


def _frames_on_disk(path: Path) -> int:
    """Frames the JSONL copy announces (StreamDatum ranges), counted independently of pxm.recover."""
    return sum(d["indices"]["stop"] - d["indices"]["start"] for n, d in _jsonl_docs(path) if n == "stream_datum")


def _events_on_disk(path: Path) -> int:
    """Event rows of the JSONL copy (events and event pages)."""
    return sum(1 if n == "event" else len(d["seq_num"]) for n, d in _jsonl_docs(path) if n in ("event", "event_page"))


def _wait_for_frames(proc: subprocess.Popen, documents: Path, seed: int, n: int) -> Path:
    """Block until the scan of ``seed`` has announced ``n`` frames in its JSONL; return that file."""
    deadline = time.monotonic() + SCAN_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the scan ended early ({proc.returncode}): {proc.communicate()[1][-1500:]}"
        for path in documents.glob("*.jsonl"):
            docs = _jsonl_docs(path)
            if docs and docs[0][1].get("sample", {}).get("name") == f"concurrency writer {seed}" \
                    and _frames_on_disk(path) >= n:
                return path
        time.sleep(0.05)
    raise AssertionError(f"the scan did not reach {n} frames in {SCAN_TIMEOUT_S} s")


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _status_of(capsys, uri: str, uid: str, key: str = KEY) -> str:
    rc, out, _ = _cli(capsys, "runs", "--tiled-uri", uri, "--api-key", key)
    assert rc == 0
    (line,) = [ln for ln in out.splitlines() if ln.startswith(uid)]
    return line.split("status=", 1)[1]


def _assert_no_duplicates_and_stop(raw) -> None:
    for uid in raw:
        counts = tiled_run_counts(raw[uid])
        assert counts.duplicate_rows == 0, (uid, counts)
        assert counts.has_stop, uid
        raw[uid]["primary"].read()


def test_tiled_killed_mid_scan_then_recover_completes_the_run_and_is_idempotent(tmp_path, capsys):
    cfg = TiledServerConfig(data_dir=tmp_path / "data", api_key=KEY)
    documents = cfg.data_dir / "documents"
    service = TiledService(cfg).start()
    try:
        scan = _start_scan(service.uri, KEY, cfg.data_dir, seed=1)
        jsonl = _wait_for_frames(scan, documents, 1, 20)
        assert service.pid is not None
        os.killpg(service.pid, signal.SIGKILL)        # the outage: Tiled dies mid-scan
        service.stop()
        out, err = scan.communicate(timeout=SCAN_TIMEOUT_S)
        assert scan.returncode == 0, err[-2000:]      # the scan goes on into HDF5 + JSONL
        uid = json.loads(out.strip().splitlines()[-1])["uid"]
        assert jsonl.stem == uid
        assert _frames_on_disk(jsonl) == N_FRAMES and _jsonl_docs(jsonl)[-1][0] == "stop"

        service = TiledService(cfg).start()           # restart on the same data folder
        uri = service.uri
        raw, _ = ensure_layout(connect(uri, KEY))
        before = tiled_run_counts(raw[uid])
        assert not before.has_stop and before.primary_frames < N_FRAMES
        status = _status_of(capsys, uri, uid)         # `pxm runs` marks it
        assert status.startswith("PARTIAL(no stop document") and f"of {N_FRAMES} frames missing" in status
        rc, _, err = _cli(capsys, "export", uid, "--tiled-uri", uri, "--api-key", KEY, "-o", str(tmp_path / "p.h5"))
        assert rc == 1 and "--allow-partial" in err and "frames are missing" in err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "p.h5").exists()

        rc, out, err = _cli(capsys, "recover", "--tiled-uri", uri, "--api-key", KEY, "--data-dir", str(cfg.data_dir),
                            "--settle-s", "0")
        assert rc == 0, err
        assert f"{uid}  completed: {N_FRAMES} events, {N_FRAMES} frames, stop success" in out
        check_run_complete(raw, uid, N_FRAMES)        # frames on disk = frames in Tiled, each once, in order
        _assert_no_duplicates_and_stop(raw)
        assert _status_of(capsys, uri, uid) == "complete"
        stamp = raw[uid].metadata["recovered"]["time"]

        rc, out, _ = _cli(capsys, "recover", "--tiled-uri", uri, "--api-key", KEY, "--data-dir", str(cfg.data_dir),
                          "--settle-s", "0")             # idempotent: nothing to do the second time
        assert rc == 0 and f"{uid}  ok: already whole" in out and "completed" not in out
        assert raw[uid].metadata["recovered"]["time"] == stamp
        check_run_complete(raw, uid, N_FRAMES)

        raw.delete_contents(uid, recursive=True, external_only=False)   # a catalog that lost the run
        assert uid not in raw
        rc, out, _ = _cli(capsys, "recover", "--tiled-uri", uri, "--api-key", KEY, "--data-dir", str(cfg.data_dir),
                          "--settle-s", "0")
        assert rc == 0 and f"{uid}  added: {N_FRAMES} events" in out
        check_run_complete(raw, uid, N_FRAMES)
        _assert_no_duplicates_and_stop(raw)
        rc, out, _ = _cli(capsys, "recover", "--tiled-uri", uri, "--api-key", KEY, "--data-dir", str(cfg.data_dir),
                          "--settle-s", "0")
        assert rc == 0 and "1 run(s) on disk: 1 ok" in out
    finally:
        service.stop()


def test_scan_killed_then_recover_from_disk_marks_the_run_partial_and_export_refuses(tiled_service, tmp_path,
                                                                                         capsys):
    uri, data_dir, key = tiled_service.uri, tiled_service.config.data_dir, tiled_service.config.api_key
    documents = data_dir / "documents"
    scan = _start_scan(uri, key, data_dir, seed=2)
    try:
        jsonl = _wait_for_frames(scan, documents, 2, 20)
    finally:
        scan.send_signal(signal.SIGKILL)              # the scan process dies: no stop document anywhere
        scan.communicate(timeout=30)
    uid = jsonl.stem
    docs = _jsonl_docs(jsonl)
    assert all(n != "stop" for n, _ in docs)
    n_disk = _events_on_disk(jsonl)                   # a frame announced without its event is not part of the run
    assert _frames_on_disk(jsonl) in (n_disk, n_disk + 1)
    (h5_uri,) = [d["uri"] for n, d in docs if n == "stream_resource"]
    h5_path = Path(h5_uri.removeprefix("file://localhost"))
    with pytest.raises(OSError):                      # left open for write by the killed process
        h5py.File(h5_path, "r")
    raw, _ = ensure_layout(connect(uri, key))
    args = ("--tiled-uri", uri, "--api-key", key)
    with_run = (*args, "--data-dir", str(data_dir), "--run", uid)

    rc, out, _ = _cli(capsys, "recover", *with_run)   # default --settle-s 30: the scan may still be writing
    assert rc == 0 and f"{uid}  skipped:" in out and "--settle-s" in out
    assert "stop" not in raw[uid].metadata or raw[uid].metadata["stop"] is None

    rc, out, _ = _cli(capsys, "recover", *with_run, "--settle-s", "0", "--dry-run")
    assert rc == 0 and f"{uid}  would complete:" in out
    assert "stop" not in raw[uid].metadata or raw[uid].metadata["stop"] is None

    rc, out, err = _cli(capsys, "recover", *with_run, "--settle-s", "0")
    assert rc == 0, err
    assert f"{uid}  completed: {n_disk} events, {n_disk} frames, stop fail (stop document written by pxm recover)" \
        in out and "closed 1 detector file(s)" in out
    run = raw[uid]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "fail" and "recovered by pxm recover" in stop["reason"]
    assert stop["num_events"] == {"primary": n_disk}
    table = run["primary"].read()                     # frames on disk = frames in Tiled, rows once each
    assert table["mpx_image"].shape[0] == n_disk
    seq = np.asarray(run["primary"].base["internal"].read()["seq_num"])
    assert np.array_equal(np.sort(seq), np.arange(1, n_disk + 1))
    frames = run["primary"]["mpx_image"][:]
    assert np.array_equal(frames[:, 0, 5], np.arange(1, n_disk + 1))
    with h5py.File(h5_path, "r") as f:                # closed by recover, still not marked complete
        assert int(f[COMPLETE_PATH][()]) == 0 and f["/entry/data/data"].shape[0] >= n_disk

    status = _status_of(capsys, uri, uid, key)
    assert status.startswith("PARTIAL(exit_status fail (recovered)")
    assert f"{N_FRAMES - n_disk} of {N_FRAMES} frames missing" in status
    rc, _, err = _cli(capsys, "export", uid, *args, "-o", str(tmp_path / "d.h5"))
    assert rc == 1 and f"{N_FRAMES - n_disk} of {N_FRAMES} frames are missing" in err and "--allow-partial" in err
    rc, _, err = _cli(capsys, "reconstruct", "--run", uid, *args, "-o", str(tmp_path / "r.h5"))
    assert rc == 1 and f"{N_FRAMES - n_disk} of {N_FRAMES} frames are missing" in err
    assert not (tmp_path / "r.h5").exists()
    rc, out, err = _cli(capsys, "export", uid, *args, "-o", str(tmp_path / "d.h5"), "--allow-partial")
    assert rc == 0, err
    assert read_dataset(tmp_path / "d.h5").frames.shape[0] == n_disk   # flat layout: the frames there are

    rc, out, _ = _cli(capsys, "recover", *with_run, "--settle-s", "0")   # idempotent
    assert rc == 0 and f"{uid}  ok: already whole in Tiled ({n_disk} events, {n_disk} frames, stop fail)" in out
    assert raw[uid].metadata["stop"]["uid"] == stop["uid"]
