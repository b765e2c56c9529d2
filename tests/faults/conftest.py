"""Shared fixtures of the fault-injection suite (docs/reliability.md).

Every case is bounded (a real RunEngine, real ``pxm`` processes, the session's Tiled server on loopback);
the helpers here start a small ``pxm demo`` against that server, wait for frames, and read back what a
user would look at afterwards: the JSONL copy, the run in Tiled, the detector file with plain h5py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testing.process_faults import new_jsonl_files, wait_for_run_events

PXM = [sys.executable, "-m", "pxm.cli"]
"""The ``pxm`` command, run by this interpreter."""
SMALL_DEMO = ["--raster", "3", "--angles", "17", "--roi", "32", "32", "--no-live"]
"""Demo sizes of the fault cases: the alignment scan (21 frames, the first run) is the one interrupted."""
PROCESS_TIMEOUT_S = 60.0
"""Bound on each process-level case after its signal (the issue asks for well under a minute)."""


@dataclass(frozen=True)
class DemoProcess:
    """A running ``pxm demo`` and the folders it writes to."""

    proc: subprocess.Popen
    data_dir: Path
    documents_before: frozenset[str]

    @property
    def documents_dir(self) -> Path:
        """The JSONL folder."""
        return self.data_dir / "documents"

    def new_jsonl(self) -> list[Path]:
        """The JSONL files this process created, in the order their runs started."""
        return new_jsonl_files(self.documents_dir, self.documents_before)

    def wait_for_events(self, n: int, timeout_s: float = 120.0) -> Path:
        """Block until its first run has ``n`` events in its JSONL; return that file."""
        return wait_for_run_events(self.proc, self.documents_dir, self.documents_before, min_events=n,
                                   timeout_s=timeout_s, poll_s=0.1)

    def finish(self, timeout_s: float = PROCESS_TIMEOUT_S) -> tuple[int, str, str]:
        """Wait for the exit (killing it after ``timeout_s``); return (exit code, stdout, stderr)."""
        try:
            out, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"pxm demo still running {timeout_s} s after the fault:\n{out}\n{err}") from None
        return self.proc.returncode, out, err


@pytest.fixture
def start_demo(tiled_service) -> Iterator[Callable[..., DemoProcess]]:
    """Start ``pxm demo ARGS`` (small sizes) against the session's Tiled server, stdin not a terminal.

    ``own_data_dir``: the demo starts its own Tiled server on that folder instead (``wrap``, e.g. a
    namespace, then holds the server too). ``stdin``: e.g. a pseudo-terminal's file descriptor.
    """
    started: list[subprocess.Popen] = []

    def start(*args: str, wrap: list[str] | None = None, env: dict[str, str] | None = None,
              own_data_dir: Path | None = None, stdin: int = subprocess.DEVNULL) -> DemoProcess:
        data_dir = Path(own_data_dir or tiled_service.config.data_dir)
        before = frozenset(p.name for p in (data_dir / "documents").glob("*.jsonl"))
        server = ["--data-dir", str(data_dir)] if own_data_dir else ["--tiled-uri", tiled_service.uri,
                                                                    "--data-dir", str(data_dir)]
        cmd = [*PXM, "demo", *server, *SMALL_DEMO, *args]
        full_env = {**os.environ, "PXM_TILED_API_KEY": tiled_service.config.api_key, "PYTHONUNBUFFERED": "1",
                    **(env or {})}
        proc = subprocess.Popen([*(wrap or []), *cmd], stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=full_env, cwd=Path(__file__).parents[2])
        started.append(proc)
        return DemoProcess(proc, data_dir, before)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
