"""Ctrl-C while ``pxm demo`` waits for the live engine's final result (issue 15).

After the Bragg scan has ended (stop document ``success``) the demo waits for the live reconstruction's
final result, minutes of computation. A signal then must not leave the live preview ``status: running``
for ever: the preview ends ``status: aborted`` with the reason, no final result is published (one cut short
would look final), the command exits 130 with one line naming the whole runs and how to reconstruct the
Bragg run, without a traceback. The deterministic hook is the line the demo prints when the Bragg scan
ends ("    N frames in T s" after "4/4 Bragg ptychography").
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pxm.catalog import ensure_layout
from pxm.runengine import EXIT_SIGINT
from testing.process_faults import tiled_processes_of

PXM = [sys.executable, "-m", "pxm.cli"]
PROCESS_TIMEOUT_S = 60.0
"""Bound on the process after its signal."""
BRAGG_START = re.compile(r"^4/4 Bragg ptychography")
SCAN_DONE = re.compile(r"^\s+\d+ frames in [0-9.]+ s")


def _start(tiled_service, own_data_dir: Path | None = None) -> subprocess.Popen:
    """A small demo with the live engine (default recipe: its final result takes minutes).

    On the session server, or with ``own_data_dir`` on an embedded server of its own (same API key).
    """
    env = {**os.environ, "PXM_TILED_API_KEY": tiled_service.config.api_key, "PYTHONUNBUFFERED": "1"}
    server = (["--data-dir", str(own_data_dir)] if own_data_dir is not None else
              ["--tiled-uri", tiled_service.uri, "--data-dir", str(tiled_service.config.data_dir)])
    return subprocess.Popen([*PXM, "demo", *server, "--raster", "3", "--angles", "17", "--roi", "32", "32"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=Path(__file__).parents[2])


def _signal_after_the_bragg_scan(proc: subprocess.Popen, sig: int) -> tuple[str, str]:
    """Send ``sig`` at the line that ends the Bragg scan; return (stdout, stderr) once the process ended."""
    lines: list[str] = []
    hooked = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        bragg = False
        for line in proc.stdout:
            lines.append(line)
            bragg = bragg or bool(BRAGG_START.search(line))
            if bragg and SCAN_DONE.search(line):
                hooked.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not hooked.wait(300):
            pytest.fail(f"pxm demo never finished its Bragg scan:\n{''.join(lines)}")
        proc.send_signal(sig)
        try:
            proc.wait(PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"pxm demo still running {PROCESS_TIMEOUT_S} s after the signal:\n{''.join(lines)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    assert proc.stderr is not None
    return "".join(lines), proc.stderr.read()


def test_ctrl_c_during_the_live_final_result_marks_it_aborted_and_exits_130(tiled_service):
    proc = _start(tiled_service)
    out, err = _signal_after_the_bragg_scan(proc, signal.SIGINT)
    assert proc.returncode == EXIT_SIGINT, err
    _check_aborted(out, err, "Ctrl-C", tiled_service.client())


def test_sigterm_during_the_live_final_result_stops_the_embedded_server_and_exits_143(tiled_service, tmp_path):
    from pxm.catalog import TiledServerConfig, TiledService
    from pxm.runengine import EXIT_SIGTERM

    data_dir = tmp_path / "own"
    proc = _start(tiled_service, own_data_dir=data_dir)
    out, err = _signal_after_the_bragg_scan(proc, signal.SIGTERM)
    assert proc.returncode == EXIT_SIGTERM, err
    deadline = time.monotonic() + 10
    while tiled_processes_of(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tiled_processes_of(data_dir) == []                  # the embedded Tiled server is stopped
    service = TiledService(TiledServerConfig(data_dir=data_dir, api_key=tiled_service.config.api_key))
    service.start()                                         # what a user finds there afterwards
    try:
        _check_aborted(out, err, "SIGTERM", service.client())
    finally:
        service.stop()


def _check_aborted(out: str, err: str, name: str, client) -> None:
    """One line, no traceback; the Bragg run whole; its live preview aborted and no final result in Tiled."""
    assert "Traceback" not in err and "Traceback" not in out, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"pxm demo: interrupted ({name}) during the live reconstruction's final result"), line
    m = re.search(r"bragg_ptychography ([0-9a-f-]{36})", line)
    assert m, line
    uid = m.group(1)
    assert f"`pxm reconstruct --run {uid}" in line, line
    assert "simulated beamtime done" not in out
    raw, processed = ensure_layout(client)
    assert raw[uid].metadata["stop"]["exit_status"] == "success"        # the scan itself is whole
    time.sleep(1.0)
    mine = {key: dict(processed[key].metadata) for key in processed
            if dict(processed[key].metadata).get("raw_uid") == uid}
    assert not [k for k, md in mine.items() if md.get("kind") != "live-preview"], mine   # no final result
    for key, md in mine.items():                                       # the preview: aborted, not running
        assert md["status"] == "aborted" and name in md["reason"], (key, md["status"])
    preview = re.search(r"live preview /processed/(\S+) marked 'aborted'", line)
    assert preview and preview.group(1) in mine, (line, list(mine))   # 153 frames: previews were published
