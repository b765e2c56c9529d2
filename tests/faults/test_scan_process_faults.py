"""Faults sent to a real ``pxm demo`` process mid-scan (issue 15): SIGINT, SIGTERM, a full data volume.

Each case starts ``pxm demo`` (stdin not a terminal) against the session's Tiled server, waits for frames of
its first scan in the JSONL, injects the fault and then checks what the user sees and finds: the exit code
and the one line on stderr (no traceback), the stop document in the JSONL and in Tiled, the detector file
readable with plain ``h5py.File(f, "r")`` with ``/entry/pxm/complete`` = 0 and as many frames as events.

The full disk is a real tmpfs of 1 MiB + 48 KiB mounted over the detector folder in a private user and mount
namespace (``unshare --user --map-root-user --mount``: no root needed). The Maxipix keeps 1 MiB free
(``devices.maxipix.RESERVE_BYTES``), so the scan fails after about ten 4 KiB frames. Where user namespaces
are disabled, the case is skipped with that reason; ``test_interrupts.py`` still fails a detector with
ENOSPC in-process.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess

import h5py
import pytest

from devices.maxipix import COMPLETE_PATH, N_FRAMES_PATH
from pxm.catalog import TiledServerConfig, TiledService, ensure_layout
from pxm.live import jsonl_documents
from pxm.runengine import EXIT_SCAN_FAILED, EXIT_SIGINT, EXIT_SIGTERM

UID = re.compile(r"run ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
H5 = re.compile(r"detector file (\S+\.h5) \(complete=0\)")


def _check_ended(rc: int, err: str, *, code: int, head: str, exit_status: str, reason: str, tiled_service,
                 h5_path=None, data_dir=None) -> str:
    """The assertions every fault shares; return the run's uid."""
    assert rc == code, err
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"pxm demo: {head}"), line
    uid = UID.search(line).group(1)
    docs = list(jsonl_documents((data_dir or tiled_service.config.data_dir) / "documents" / f"{uid}.jsonl"))
    name, stop = docs[-1]
    assert name == "stop" and stop["exit_status"] == exit_status and reason in stop["reason"], stop
    n_events = sum(1 if n == "event" else len(d["seq_num"]) for n, d in docs if n in ("event", "event_page"))
    assert f"{n_events} of 21 frames recorded" in line
    assert f"stop document exit_status '{exit_status}'" in line
    raw, _ = ensure_layout(tiled_service.client())
    tiled_stop = raw[uid].metadata["stop"]
    assert tiled_stop["exit_status"] == exit_status and reason in tiled_stop["reason"]
    path = h5_path or H5.search(line).group(1)
    with h5py.File(path, "r") as f:                      # plain h5py: closed, not "already open for write"
        assert f[COMPLETE_PATH][()] == 0
        assert f[N_FRAMES_PATH][()] == n_events
    return uid


@pytest.mark.parametrize(("sig", "code", "head", "reason"), [
    (signal.SIGINT, EXIT_SIGINT, "scan aborted (Ctrl-C)", "aborted by Ctrl-C"),
    (signal.SIGTERM, EXIT_SIGTERM, "scan aborted (SIGTERM)", "aborted by SIGTERM"),
], ids=["sigint", "sigterm"])
def test_a_signal_mid_scan_ends_the_run_cleanly(start_demo, tiled_service, sig, code, head, reason):
    demo = start_demo()                                  # no --on-interrupt: no terminal, so Ctrl-C aborts
    demo.wait_for_events(3)
    demo.proc.send_signal(sig)
    rc, out, err = demo.finish()
    _check_ended(rc, err, code=code, head=head, exit_status="abort", reason=reason, tiled_service=tiled_service)
    assert "2/4" not in out                              # the beamtime ends with the interrupted scan


def _user_namespaces() -> str | None:
    """None where ``unshare`` can mount a tmpfs without root, else why not."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot mount a tmpfs in a user namespace here: {probe.stderr.strip()[:200]}"
    return None


def test_a_full_data_volume_fails_the_run_cleanly(start_demo, tiled_service, tmp_path):
    why = _user_namespaces()
    if why:
        pytest.skip(why)
    data_dir = tmp_path / "data"
    raw = data_dir / "raw"
    raw.mkdir(parents=True)
    copy = tmp_path / "raw-copy"
    copy.mkdir()
    script = (f'mount -t tmpfs -o size=1072k,mode=0700 tmpfs "{raw}" || exit 99; "$@"; rc=$?; '
              f'cp "{raw}"/*.h5 "{copy}"/ 2>/dev/null; exit $rc')   # the tmpfs goes with the namespace
    # the demo's own Tiled server runs in the namespace too: it must read the detector files on the tmpfs
    demo = start_demo(wrap=["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"],
                      own_data_dir=data_dir)
    rc, out, err = demo.finish(timeout_s=240)            # it fails by itself after ~10 frames
    files = list(copy.glob("*.h5"))
    assert len(files) == 1, (files, err)
    assert "No space left on device" in err and "free space there or move the data folder" in err
    with TiledService(TiledServerConfig(data_dir=data_dir, api_key=tiled_service.config.api_key)) as service:
        _check_ended(rc, err, code=EXIT_SCAN_FAILED, head="scan failed: mpx: frame not written: OSError",
                     exit_status="fail", reason="No space left on device", tiled_service=service,
                     h5_path=files[0], data_dir=data_dir)


def test_at_a_terminal_ctrl_c_asks_and_stop_keeps_the_run(start_demo, tiled_service):
    """stdin a (pseudo-)terminal: the first Ctrl-C pauses and asks; 's' ends the run as bluesky's stop."""
    import os
    import pty
    import threading
    import time

    master, slave = pty.openpty()
    try:
        demo = start_demo(stdin=slave)
        demo.wait_for_events(3)
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.extend(iter(lambda: demo.proc.stdout.read(1), "")),
                                  daemon=True)
        reader.start()
        demo.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        while "[r]esume" not in "".join(out) and time.monotonic() < deadline and demo.proc.poll() is None:
            time.sleep(0.1)
        assert "[r]esume, [s]top" in "".join(out), "".join(out)
        os.write(master, b"s\n")
        demo.proc.wait(60)
        reader.join(10)
        err = demo.proc.stderr.read()
    finally:
        os.close(master)
        os.close(slave)
    uid = _check_ended(demo.proc.returncode, err, code=EXIT_SIGINT, head="scan stopped (Ctrl-C)",
                       exit_status="success", reason="", tiled_service=tiled_service)
    assert len(uid) == 36
