"""Ctrl-C / SIGTERM outside a running plan, and the FP-DFXM demo's scans through pxm's interrupt handling (issue 15).

``pxm demo`` runs the alignment, the spiral, the spiral's forward ptychography (no scan running: the
reconstruction of the probe) and then the Bragg scan. A signal during that reconstruction must end the
beamtime as cleanly as one during a scan: exit 130/143, one line on stderr, no traceback, no probe file
left (nothing looking complete), the runs that had ended whole, and an embedded Tiled server stopped.
The deterministic hook is the line the demo prints just before the reconstruction ("3/4 forward
ptychography of run …").
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
from pxm.runengine import (
    EXIT_SIGINT,
    EXIT_SIGTERM,
    BeamtimeInterrupted,
    interrupt_between_scans,
    run_plan,
)
from testing.process_faults import jsonl_so_far, n_events, signal_and_wait, tiled_processes_of, wait_for_run_events

PXM = [sys.executable, "-m", "pxm.cli"]
PROCESS_TIMEOUT_S = 60.0
"""Bound on each process after its signal."""

HOOK = re.compile(r"3/4 forward ptychography of run ([0-9a-f]{8})")
UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# ------------------------------------------------------------------------------------------ in-process
@pytest.mark.parametrize(("sig", "name", "code"), [(signal.SIGINT, "Ctrl-C", EXIT_SIGINT),
                                                   (signal.SIGTERM, "SIGTERM", EXIT_SIGTERM)])
def test_a_signal_between_scans_raises_beamtime_interrupted_once(sig, name, code):
    before = signal.getsignal(sig)
    with pytest.raises(BeamtimeInterrupted) as info:
        with interrupt_between_scans():
            os.kill(os.getpid(), sig)
            time.sleep(5)                                 # the handler raises long before this ends
    assert (info.value.signal_name, info.value.exit_code) == (name, code)
    assert "between scans" in info.value.line("/data") and "/data/documents" in info.value.line("/data")
    assert signal.getsignal(sig) is before                # the previous handler is back


def test_run_plan_inside_the_block_hands_the_signals_back_after_the_plan(RE, tmp_path):
    """A plan's own handlers (pause, stop document) during the plan, the between-scans ones after it."""
    import bluesky.plan_stubs as bps

    seen = []

    def plan():
        seen.append(signal.getsignal(signal.SIGINT))
        yield from bps.open_run()
        yield from bps.close_run()

    with interrupt_between_scans():
        ours = signal.getsignal(signal.SIGINT)
        run_plan(RE, plan(), documents_dir=tmp_path)
        assert seen and seen[0] is not ours                   # run_plan's pause handler ran the plan
        assert signal.getsignal(signal.SIGINT) is ours and signal.getsignal(signal.SIGTERM) is ours
        with pytest.raises(BeamtimeInterrupted):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)


# ------------------------------------------------------------------------------------------ pxm demo
def _watch_stdout(proc: subprocess.Popen) -> tuple[list[str], threading.Event, list[str]]:
    """Collect the demo's stdout in a thread; the event is set at the hook line (its uid8 in the list)."""
    lines: list[str] = []
    hooked = threading.Event()
    spiral: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = HOOK.search(line)
            if m and not hooked.is_set():
                spiral.append(m.group(1))
                hooked.set()

    threading.Thread(target=read, daemon=True).start()
    return lines, hooked, spiral


def _interrupt_at_the_probe_reconstruction(demo, sig: int) -> tuple[int, str, str, str]:
    lines, hooked, spiral = _watch_stdout(demo.proc)
    if not hooked.wait(180):
        demo.proc.kill()
        pytest.fail(f"pxm demo never reached the probe reconstruction:\n{''.join(lines)}")
    demo.proc.send_signal(sig)
    try:
        demo.proc.wait(PROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        demo.proc.kill()
        pytest.fail(f"pxm demo still running {PROCESS_TIMEOUT_S} s after the signal:\n{''.join(lines)}")
    assert demo.proc.stderr is not None
    err = demo.proc.stderr.read()
    time.sleep(0.2)                                        # the reader thread drains stdout
    return demo.proc.returncode, "".join(lines), err, spiral[0]


def _check_clean_end(rc: int, out: str, err: str, spiral8: str, *, code: int, name: str, data_dir: Path,
                     raw) -> None:
    assert rc == code, err
    assert "Traceback" not in err and "Traceback" not in out, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"pxm demo: interrupted ({name}) between scans"), line
    assert "4/4" not in out                                # the Bragg scan never started
    # the two runs that had ended are named, whole, with a success stop document, in the JSONL and Tiled
    uids = UID.findall(line)
    assert len(uids) == 2 and uids[1].startswith(spiral8), line
    for uid in uids:
        docs = jsonl_so_far(data_dir / "documents" / f"{uid}.jsonl")
        name_, stop = docs[-1]
        assert name_ == "stop" and stop["exit_status"] == "success"
        assert stop["num_events"]["primary"] == n_events(docs)
        if raw is not None:
            assert raw[uid].metadata["stop"]["exit_status"] == "success"
    # nothing looks complete that is not: no probe file of the interrupted reconstruction, no partial one
    probes = data_dir / "probes"
    left = sorted(p.name for p in probes.glob(f"*{spiral8}*")) if probes.is_dir() else []
    assert left == [], left


def test_ctrl_c_during_the_probe_reconstruction_ends_the_demo_cleanly(start_demo, tiled_service):
    demo = start_demo()
    rc, out, err, spiral8 = _interrupt_at_the_probe_reconstruction(demo, signal.SIGINT)
    raw, _ = ensure_layout(tiled_service.client())
    _check_clean_end(rc, out, err, spiral8, code=EXIT_SIGINT, name="Ctrl-C", data_dir=demo.data_dir, raw=raw)


def test_sigterm_during_the_probe_reconstruction_stops_the_embedded_tiled_server(start_demo, tmp_path):
    data_dir = tmp_path / "own"
    demo = start_demo(own_data_dir=data_dir)               # the demo starts its own Tiled server
    rc, out, err, spiral8 = _interrupt_at_the_probe_reconstruction(demo, signal.SIGTERM)
    _check_clean_end(rc, out, err, spiral8, code=EXIT_SIGTERM, name="SIGTERM", data_dir=data_dir, raw=None)
    deadline = time.monotonic() + 10
    while tiled_processes_of(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tiled_processes_of(data_dir) == []                  # no orphaned server


# ------------------------------------------------------------------------------------------ pxm dfxm-demo
def test_ctrl_c_during_the_fp_dfxm_scan_writes_the_stop_document_and_exits_130(tiled_service):
    """`--simulate-exposure` (0.1 s per frame, as a real camera): the 81-frame scan lasts ≥ 8 s, so it is still
    running when the signal lands, however loaded the machine (without exposure time a 9 × 9 scan had ended under
    two xdist workers before the signal, exit 0)."""
    data_dir = Path(tiled_service.config.data_dir)
    docs = data_dir / "documents"
    before = {p.name for p in docs.glob("*.jsonl")}
    env = {**os.environ, "PXM_TILED_API_KEY": tiled_service.config.api_key, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*PXM, "dfxm-demo",
                             "--tiled-uri", tiled_service.uri, "--data-dir", str(data_dir), "--grid", "9",
                             "--simulate-exposure", "--iterations", "5"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).parents[2])
    try:
        jsonl = wait_for_run_events(proc, docs, before, min_events=3, timeout_s=120)
        out, err = signal_and_wait(proc, signal.SIGINT, PROCESS_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_SIGINT, err
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    uid = jsonl.stem
    assert line.startswith(f"pxm dfxm-demo: scan aborted (Ctrl-C); run {uid}"), line
    recorded = jsonl_so_far(jsonl)
    name, stop = recorded[-1]
    assert name == "stop" and stop["exit_status"] == "abort" and "aborted by Ctrl-C" in stop["reason"]
    n = n_events(recorded)
    assert 3 <= n < 81 and f"{n} of 81 frames recorded" in line
    raw, _ = ensure_layout(tiled_service.client())
    assert raw[uid].metadata["stop"]["exit_status"] == "abort"
    assert "published" not in out                           # no reconstruction of an aborted run
