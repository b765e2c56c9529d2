"""Ctrl-C during the scans of ``pxm demo --geometry NAME`` and ``pxm dfxm-demo --ferroelectric`` (issue 15).

Both run their scans through :func:`pxm.runengine.run_plan` like the Bragg demo. A Ctrl-C mid-scan (stdin
not a terminal: abort) must give the run its stop document (``exit_status`` ``abort``) in the JSONL and in
Tiled, leave the detector file closed and readable by plain h5py with ``/entry/pxm/complete`` = 0, end the
command with exit 130 and one line, no traceback; runs that had ended before stay whole. Each case is a real
``pxm`` process against the session's Tiled server, small sizes, the signal sent once the JSONL copy of the
scan shows frames.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py

from pxm.catalog import ensure_layout
from pxm.runengine import EXIT_SIGINT
from testing.process_faults import jsonl_so_far, n_events, new_jsonl_files, signal_and_wait, wait_for_run_events

PXM = [sys.executable, "-m", "pxm.cli"]
PROCESS_TIMEOUT_S = 60.0
"""Bound on each process after its signal."""


def _interrupt_at(tiled_service, args: list[str], *, nth_run: int, min_events: int
                  ) -> tuple[subprocess.Popen, str, str, list[Path]]:
    """Run ``pxm ARGS`` on the session server; SIGINT once its ``nth_run``-th new JSONL has ``min_events``.

    Returns the process, stdout, stderr and the new JSONL files in the order they were created.
    """
    data_dir = Path(tiled_service.config.data_dir)
    docs = data_dir / "documents"
    before = {p.name for p in docs.glob("*.jsonl")}
    env = {**os.environ, "PXM_TILED_API_KEY": tiled_service.config.api_key, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*PXM, *args, "--tiled-uri", tiled_service.uri, "--data-dir", str(data_dir)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=Path(__file__).parents[2])

    try:
        wait_for_run_events(proc, docs, before, nth_run=nth_run, min_events=min_events, timeout_s=240)
        out, err = signal_and_wait(proc, signal.SIGINT, PROCESS_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc, out, err, new_jsonl_files(docs, before)


def _check_aborted_run(jsonl: Path, line: str, command: str, raw) -> None:
    """The run of ``jsonl``: abort stop document (JSONL and Tiled), named in the line, detector file closed, 0."""
    uid = jsonl.stem
    assert line.startswith(f"pxm {command}: scan aborted (Ctrl-C); run {uid}"), line
    recorded = jsonl_so_far(jsonl)
    name, stop = recorded[-1]
    assert name == "stop" and stop["exit_status"] == "abort" and "aborted by Ctrl-C" in stop["reason"], stop
    n, total = n_events(recorded), recorded[0][1]["num_points"]
    assert 1 <= n < total and f"{n} of {total} frames recorded" in line, line
    assert raw[uid].metadata["stop"]["exit_status"] == "abort"
    files = [str(d["uri"]).removeprefix("file://localhost") for k, d in recorded if k == "stream_resource"]
    assert files, "no detector file announced"
    for f in files:
        with h5py.File(f, "r") as h5:                       # plain h5py: closed, not left open for write
            assert int(h5["/entry/pxm/complete"][()]) == 0
        assert f"{f} (complete=0)" in line, line


def test_ctrl_c_during_the_scan_of_demo_geometry_aborts_the_run_cleanly(tiled_service):
    proc, out, err, files = _interrupt_at(
        tiled_service, ["demo", "--geometry", "asymmetric-in-plane", "--raster", "3", "--angles", "10", "--roi",
                        "20", "20"], nth_run=1, min_events=3)
    assert proc.returncode == EXIT_SIGINT, err
    assert "Traceback" not in err and "Traceback" not in out, err
    raw, _ = ensure_layout(tiled_service.client())
    _check_aborted_run(files[0], err.strip().splitlines()[-1], "demo", raw)
    assert "export and reconstruct" not in out                  # nothing reconstructed from the aborted run


def test_ctrl_c_during_the_second_ferroelectric_scan_keeps_the_first_and_aborts_the_second(tiled_service):
    # --simulate-exposure: 49 frames of 0.1 s per scan, so the second scan is still running when the signal lands
    args = ["dfxm-demo", "--ferroelectric", "--grid", "7", "--simulate-exposure", "--iterations", "5"]
    proc, out, err, files = _interrupt_at(tiled_service, args, nth_run=2, min_events=2)
    assert proc.returncode == EXIT_SIGINT, err
    assert "Traceback" not in err and "Traceback" not in out, err
    assert len(files) == 2, files
    raw, _ = ensure_layout(tiled_service.client())
    first = jsonl_so_far(files[0])                                   # the scan that had ended: whole
    assert first[-1][0] == "stop" and first[-1][1]["exit_status"] == "success"
    assert n_events(first) == first[0][1]["num_points"] == 49
    assert raw[files[0].stem].metadata["stop"]["exit_status"] == "success"
    _check_aborted_run(files[1], err.strip().splitlines()[-1], "dfxm-demo", raw)
    assert "reconstructing run" not in out                    # no reconstruction, no polarization published
