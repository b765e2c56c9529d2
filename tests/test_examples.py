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

pytestmark = pytest.mark.slow                        # thirteen processes, ~260 s of CPU in all

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TIMEOUT_S = 900
"""Per example; each takes well under a minute of CPU (docs/python-api.md), the rest is a busy machine."""
N_FRAMES = 3 * 3 * 17
"""The small beamtime's Bragg scan: 3 × 3 raster × 17 angles (examples/_beamtime.py SMALL)."""
STRAIN_RMSE_BOUND = 2e-4
"""Bound on example 03's strain RMSE against the simulator's truth (as the small demo's)."""
ZERNIKE_ERROR_BOUND_RAD = 0.1
"""Bound on example 08's largest error of a retrieved Zernike coefficient (true ones 0.3-0.4 rad)."""
POLARIZATION_RMS_BOUND_C_PER_M2 = 2.5e-3
"""Bound on example 12's |P| error against the LGD truth: 1 % of Ps (tests/system/test_ferroelectric_tiled.py)."""


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
                       "04_publish_and_read_back.py", "05_replay_recorded_run.py", "06_probe_from_spiral.py",
                       "07_recover_after_outage.py", "08_fp_dfxm.py", "09_polarization.py",
                       "10_exchange_formats.py", "11_live_consumer.py", "12_ferroelectric.py",
                       "13_general_geometry.py"}


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


def test_06_probe_from_spiral(work):
    out = _run("06_probe_from_spiral.py", work)
    assert (work / "probe-api.h5").is_file()
    assert _number(r"max \|probe - beamtime's probe file\| = (\S+)", out) == 0     # the same code, the same probe
    assert _number(r" -> (\S+) in \d+ sweeps", out) < _number(r"error (\S+) -> ", out)   # ePIE converged


def test_07_recover_after_outage(work):
    out = _run("07_recover_after_outage.py", work)
    assert "in Tiled: False" in out                     # the outage
    assert re.search(r"dry run: \S+  would add:", out) and re.search(r"\S+  added: ", out), out
    assert re.search(r"frames of the run: 153 before, 153 after recovery", out), out
    assert re.search(r"second pass: \{'ok': 3\}", out), out


def test_08_fp_dfxm(work):
    out = _run("08_fp_dfxm.py", work)
    assert "frames (25, 32, 32)" in out and re.search(r"published /processed/\S+", out)
    assert _number(r"largest Zernike error: (\S+) rad", out) < ZERNIKE_ERROR_BOUND_RAD
    assert _number(r"strain map \(\d+, \d+\): (\d+) lit pixels", out) > 0


def test_09_polarization(work):
    out = _run("09_polarization.py", work)
    ps = _number(r"Ps = (\S+) C/m", out)
    assert _number(r"max \| \|P\| - Ps \| = (\S+) C/m", out) < 1e-3 * ps    # |P| = Ps in both domains
    assert "refused: pxm polarization: error: " in out and "--force" in out       # 02's W (220) is not BaTiO3


def test_10_exchange_formats(work):
    out = _run("10_exchange_formats.py", work)
    assert re.search(r"wrote \S+scan\.cxi: NXcxi_ptycho \(CXI 160\), 153 frames 32×32", out), out
    assert "read pxm: grid layout, frames (9, 17, 32, 32)" in out
    assert _number(r"max \|frames - original\| = (\S+),", out) == 0 and "same geometry: True" in out
    assert re.search(r"wrote \S+results\.vti: VTK ImageData", out), out


def test_11_live_consumer(work):
    out = _run("11_live_consumer.py", work)
    assert _number(r"live: run \S+: (\d+) of \d+ frames used", out) == N_FRAMES
    assert "status complete" in out


def test_12_ferroelectric(work):
    out = _run("12_ferroelectric.py", work)
    assert re.search(r"c variant: run \S+, 9 frames", out) and re.search(r"a variant: run \S+, 9 frames", out), out
    assert _number(r"\|P\| error vs truth: rms (\S+) C/m", out) < POLARIZATION_RMS_BOUND_C_PER_M2
    assert _number(r"c/a label right on (\S+)% ", out) > 95
    assert _number(r"max \|published - computed\| = (\S+) C/m", out) < 1e-6


def test_13_general_geometry(work):
    out = _run("13_general_geometry.py", work)
    true = _number(r"found for (\S+) true", out)
    assert _number(r"RMSE (\S+) in \d+ lit voxels", out) < 0.25 * true             # the strain is recovered
    assert "rocking circle eta" in out and "frames (90, 20, 20)" in out            # 3 x 3 raster x 10 angles
    assert "'delta': 80.0" in out                                                  # the circles as driven
