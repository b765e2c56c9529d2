"""Helpers of the fault tests that signal or kill pxm processes: what a JSONL copy holds so far, waiting until a
process's n-th run has recorded enough frames, signalling it and collecting its output, and which Tiled server
processes still serve a data folder (the orphan check).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

__all__ = ["jsonl_so_far", "n_events", "new_jsonl_files", "signal_and_wait", "tiled_processes_of",
           "wait_for_run_events"]


def jsonl_so_far(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(name, doc) pairs of a JSONL document copy that may still be written: an incomplete line is left out."""
    out = []
    for line in path.read_text().splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        out.append((d["name"], d["doc"]))
    return out


def n_events(docs: list[tuple[str, dict[str, Any]]]) -> int:
    """Number of events in ``docs``, counting each row of an event page."""
    return sum(1 if k == "event" else len(d["seq_num"]) for k, d in docs if k in ("event", "event_page"))


def new_jsonl_files(documents_dir: Path, before: Collection[str]) -> list[Path]:
    """The JSONL copies in ``documents_dir`` not named in ``before``, in the order their runs started.

    A file without a complete start document yet sorts last.
    """
    def started(p: Path) -> float:
        recorded = jsonl_so_far(p)
        return float(recorded[0][1]["time"]) if recorded else float("inf")

    return sorted((p for p in Path(documents_dir).glob("*.jsonl") if p.name not in before), key=started)


def wait_for_run_events(proc: subprocess.Popen[str], documents_dir: Path, before: Collection[str], *,
                        min_events: int, nth_run: int = 1, timeout_s: float = 120.0,
                        poll_s: float = 0.05) -> Path:
    """Block until the ``nth_run``-th new run of ``proc`` has ``min_events`` events in its JSONL; return that file.

    Parameters
    ----------
    proc
        The running ``pxm`` process (text pipes on stdout and stderr).
    documents_dir, before
        Its JSONL folder and the file names that were there before it started.
    min_events, nth_run
        How many events the run must hold, and which new run (1 = the first to start).
    timeout_s, poll_s
        Bound on the wait and the polling period.

    Raises
    ------
    AssertionError
        With the process's output, when it exits first or ``timeout_s`` passes (the process is then killed).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        files = new_jsonl_files(documents_dir, before)
        if len(files) >= nth_run and n_events(jsonl_so_far(files[nth_run - 1])) >= min_events:
            return files[nth_run - 1]
        time.sleep(poll_s)
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate()
    raise AssertionError(f"run {nth_run} of {proc.args!r} never reached {min_events} events within {timeout_s} s "
                         f"(exit {proc.returncode}):\n{out}\n{err}")


def signal_and_wait(proc: subprocess.Popen[str], sig: int, timeout_s: float) -> tuple[str, str]:
    """Send ``sig`` to ``proc`` and return its (stdout, stderr) once it exits.

    Raises
    ------
    AssertionError
        When it is still running ``timeout_s`` after the signal (it is killed first).
    """
    proc.send_signal(sig)
    try:
        return proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args!r} still running {timeout_s} s after signal {sig}:\n{out}\n{err}") from None


def tiled_processes_of(data_dir: Path) -> list[int]:
    """pids of the processes (other than this one) whose command line names ``tiled`` and ``data_dir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "tiled" in cmd and str(data_dir) in cmd:
            pids.append(int(proc.name))
    return pids
