"""Issue 20 point 5: every script in ``examples/`` runs, as a scientist would run it, and prints what it should.

Each example is a separate Python process on loopback (its own Tiled server); 01 simulates the small
beamtime into a shared work folder, the others reuse it (as their docstrings say), so the suite simulates
once. Each check reads a figure the script printed and compares it with what the data must give.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow                        # five processes, ~100 s of CPU in all

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TIMEOUT_S = 900
"""Per example; each takes well under a minute of CPU (docs/python-api.md), the rest is a busy machine."""
N_FRAMES = 3 * 3 * 17
"""The small beamtime's Bragg scan: 3 × 3 raster × 17 angles (examples/_beamtime.py SMALL)."""
STRAIN_RMSE_BOUND = 2e-4
"""Bound on example 03's strain RMSE against the simulator's truth (as the small demo's)."""


def _run(name: str, work: Path) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PXM_TILED_URI", None)
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), str(work)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    assert not _servers_left(work), f"{name} left its Tiled server running"
    return proc.stdout


def _servers_left(work: Path) -> list[str]:
    """Command lines of processes still serving ``work`` (the examples stop their servers)."""
    import time

    left: list[str] = []
    for _ in range(20):                                 # SIGTERM then exit: allow a moment
        left = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "tiled" in args and str(work) in args:
                left.append(args)
        if not left:
            return []
        time.sleep(0.5)
    return left


def _number(pattern: str, out: str) -> float:
    m = re.search(pattern, out)
    assert m is not None, f"{pattern!r} not in the output:\n{out[-3000:]}"
    return float(m.group(1))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The work folder after 01: a served data folder with the small beamtime."""
    folder = tmp_path_factory.mktemp("examples")
    out = _run("01_simulate_beamtime.py", folder)
    assert re.search(r"raster_rocking_scan\s+153 frames\s+complete", out), out
    assert _number(r"bragg frames: (\d+)", out) == N_FRAMES
    assert re.search(r"web UI http://127\.0\.0\.1:\d+/ui/", out)
    return folder


def test_every_example_is_tested():
    scripts = {p.name for p in EXAMPLES.glob("[0-9]*.py")}
    assert scripts == {"01_simulate_beamtime.py", "02_export_and_reconstruct.py", "03_reconstruct_dataset_strain.py",
                       "04_publish_and_read_back.py", "05_replay_recorded_run.py"}


def test_02_export_and_reconstruct(work):
    out = _run("02_export_and_reconstruct.py", work)
    assert "frames (9, 17, 32, 32)" in out
    assert (work / "scan.h5").is_file() and (work / "results.h5").is_file()
    assert _number(r"reconstructed: (\d+) iterations", out) > 0
    assert "post-processing errors: none" in out


def test_03_strain_against_the_truth(work):
    out = _run("03_reconstruct_dataset_strain.py", work)
    assert "-probe.h5" in out                           # started from the spiral's probe, not the model
    rmse = _number(r"strain RMSE vs truth: (\S+) ", out)
    assert rmse < STRAIN_RMSE_BOUND
    assert rmse < _number(r"true strain RMS (\S+),", out)    # better than a map of zeros


def test_04_publish_and_read_back(work):
    out = _run("04_publish_and_read_back.py", work)
    assert re.search(r"published /processed/\S+-recon-\d+", out), out
    assert _number(r"max \|published - computed\| = (\S+)", out) < 1e-6


def test_05_replay(work):
    out = _run("05_replay_recorded_run.py", work)
    assert _number(r"(\d+) of \d+ frames used", out) == N_FRAMES
    assert (work / "replayed.h5").is_file()
