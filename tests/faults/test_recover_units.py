"""The pieces of ``pxm recover`` and of partial-run marking, without processes (fast).

The process-level cases (Tiled or the scan killed with SIGKILL) are in ``test_recover.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pxm.catalog import RunCounts
from pxm.recover import RecoverOptions, read_disk_run, recovered_stop_document, repair_detector_file


def _write_jsonl(path: Path, docs: list[tuple[str, dict]]) -> Path:
    path.write_text("".join(json.dumps({"name": n, "doc": d}) + "\n" for n, d in docs))
    return path


def _killed_run_documents(n_events: int, *, announced_extra: int) -> list[tuple[str, dict]]:
    """Documents of a scan killed after ``n_events`` points (+ frames announced without their event)."""
    docs: list[tuple[str, dict]] = [
        ("start", {"uid": "run-1", "time": 1.0, "num_points": 10}),
        ("descriptor", {"uid": "desc-1", "run_start": "run-1", "name": "primary", "time": 1.0}),
        ("stream_resource", {"uid": "sres-1", "data_key": "mpx_image", "uri": "file://localhost/tmp/x.h5",
                             "mimetype": "application/x-hdf5", "parameters": {"dataset": "/entry/data/data"},
                             "run_start": "run-1"}),
    ]
    for i in range(n_events + announced_extra):
        docs.append(("stream_datum", {"uid": f"sres-1/{i}", "stream_resource": "sres-1", "descriptor": "desc-1",
                                      "indices": {"start": i, "stop": i + 1}}))
        if i < n_events:
            docs.append(("event_page", {"descriptor": "desc-1", "seq_num": [i + 1], "time": [2.0 + i]}))
    return docs


def test_read_disk_run_counts_events_and_frames_and_leaves_out_frames_without_an_event(tmp_path):
    path = _write_jsonl(tmp_path / "run-1.jsonl", _killed_run_documents(6, announced_extra=1))
    with open(path, "a") as f:
        f.write('{"name": "event_page", "doc": {"descr')          # the line SIGKILL cut short
    run = read_disk_run(path)
    assert run.uid == "run-1" and run.stop is None
    assert run.events == {"primary": 6} and run.frames == {"primary/mpx_image": 6}
    assert run.unmatched_frames == 1 and run.dropped_lines == 1
    assert run.files == (Path("/tmp/x.h5"),)
    assert run.frames_needed == {(Path("/tmp/x.h5"), "/entry/data/data"): 6}   # the unannounced 7th is not needed
    stop = recovered_stop_document(run, "recovered by pxm recover: test")
    assert stop["exit_status"] == "fail" and stop["run_start"] == "run-1"
    assert stop["num_events"] == {"primary": 6} and stop["time"] == pytest.approx(7.0)   # the last event's time


def test_a_run_with_its_stop_document_keeps_every_frame(tmp_path):
    docs = _killed_run_documents(4, announced_extra=0)
    docs.append(("stop", {"uid": "stop-1", "run_start": "run-1", "time": 9.0, "exit_status": "success"}))
    run = read_disk_run(_write_jsonl(tmp_path / "run-1.jsonl", docs))
    assert run.stop is not None and run.unmatched_frames == 0 and run.frames == {"primary/mpx_image": 4}


def test_a_file_that_is_not_a_jsonl_copy_is_named(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text('{"name": "event", "doc": {}}\n')
    with pytest.raises(ValueError, match="no start document"):
        read_disk_run(path)


def test_settle_time_must_not_be_negative():
    with pytest.raises(ValueError, match="--settle-s"):
        RecoverOptions(settle_s=-1)


def _counts(stop: dict | None, events: int, frames: int, *, planned: int = 10, duplicates: int = 0) -> RunCounts:
    return RunCounts(uid="u", start={"uid": "u", "num_points": planned}, stop=stop, events={"primary": events},
                     frames={"primary/mpx_image": frames}, duplicate_rows=duplicates)


def test_partial_marking_names_the_missing_frames():
    ok = {"exit_status": "success"}
    assert _counts(ok, 10, 10).status() == "complete" and not _counts(ok, 10, 10).partial
    c = _counts(None, 4, 3)                                     # Tiled died: no stop, fewer frames than events
    assert c.partial and c.missing_frames == 7 and c.expected_frames == 10
    assert c.status() == "PARTIAL(no stop document; 7 of 10 frames missing)"
    c = _counts({"exit_status": "fail", "reason": "recovered by pxm recover: killed"}, 6, 6)
    assert c.status() == "PARTIAL(exit_status fail (recovered); 4 of 10 frames missing)"
    c = _counts(ok, 10, 8)                                      # success but frames missing in Tiled
    assert c.partial and c.status() == "PARTIAL(2 of 10 frames missing)"
    c = _counts(ok, 12, 12, duplicates=2)                       # retried appends: damaged, not partial
    assert not c.partial and c.status() == "DAMAGED(2 duplicated event rows)"


def test_repair_closes_a_detector_file_left_open_by_a_killed_writer(tmp_path):
    path = tmp_path / "mpx.h5"
    code = (  # the detector's way of writing: SWMR, frames flushed one by one, then SIGKILL before closing
        "import h5py, numpy as np, os, signal, sys\n"
        "f = h5py.File(sys.argv[1], 'w', libver='latest')\n"
        "d = f.create_dataset('/entry/data/data', shape=(0, 4, 4), maxshape=(None, 4, 4), chunks=(1, 4, 4),"
        " dtype='<u4')\n"
        "f.create_dataset('/entry/pxm/complete', data=np.uint8(0))\n"
        "f.swmr_mode = True\n"
        "for i in range(5):\n"
        "    d.resize(i + 1, axis=0); d[i] = i + 1; d.flush()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    os.chmod(path, 0o600)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")
    assert repair_detector_file(path) is True
    with h5py.File(path, "r") as f:                             # plain h5py reads it now, same frames and flag
        assert np.array_equal(f["/entry/data/data"][:, 0, 0], np.arange(1, 6))
        assert int(f["/entry/pxm/complete"][()]) == 0
    assert oct(path.stat().st_mode & 0o777) == "0o600" and not list(tmp_path.glob("*.recovering"))
    assert repair_detector_file(path) is False                  # already closed: left alone


def test_recover_names_a_data_folder_without_documents_before_connecting(tmp_path, capsys):
    from pxm.cli import main

    rc = main(["recover", "--tiled-uri", "http://127.0.0.1:9", "--api-key", "k" * 16, "--data-dir",
               str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "nowhere/documents is not a folder" in err and "--data-dir" in err and "Traceback" not in err
