"""Issue 17 point 1: the demo characterises the probe first, then reconstructs the Bragg scan from it.

A small demo on the session's real Tiled server: the spiral run comes before the Bragg run, the live
engine's start probe is the spiral's forward-ptychography probe (by provenance: the published result's
``probe_source`` names the probe file and the spiral's uid), and the final strain is scored against the
simulator's truth. The rocking-range check refuses a range no recipe reconstructs.
"""

from __future__ import annotations

import json
import math
import re

import pytest

from pxm.demo import DemoOptions, check_rocking_range, min_rocking_range_rad, run_demo
from pxm.reconstruction import KB_NA_V_RAD

SMALL = dict(n_raster=3, n_angles=17, roi_px=(32, 32), n_spiral=30, probe_iterations=30, live_iterations=40)
SMALL_STRAIN_RMSE_BOUND = 2e-4
"""Bound on the small demo's strain RMSE against the truth in the lit crystal (measured 2026-12-07: 1.23e-4 over 23
voxels, true strain RMS there 3.0e-4, E_rho 0.62; the default size reaches 7.4e-5, docs/benchmarks.md)."""


def test_default_demo_has_a_reconstructable_rocking_range():
    opts = DemoOptions()
    assert opts.n_angles >= 17
    assert opts.n_angles * math.radians(opts.rocking_step_deg) >= min_rocking_range_rad(KB_NA_V_RAD)
    assert min_rocking_range_rad(KB_NA_V_RAD) == pytest.approx(4 * 3.7e-4)


@pytest.mark.parametrize(("n_angles", "step_deg", "fix"), [(9, 0.005, "17"), (15, 0.005, "17"), (9, 0.008, "11")])
def test_short_rocking_range_is_refused(n_angles, step_deg, fix):
    with pytest.raises(ValueError, match=rf"rocking range .* use at least {fix} angles"):
        DemoOptions(n_angles=n_angles, rocking_step_deg=step_deg)
    check_rocking_range(int(fix), step_deg)          # the suggested count passes
    DemoOptions(n_angles=9, full=True)                # --full sets the seed's 42 angles


def test_cli_short_range_is_one_line(tmp_path, capsys):
    from pxm.cli import main

    rc = main(["demo", "--data-dir", str(tmp_path / "d"), "--api-key", "k" * 24, "--angles", "9"])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "rocking range" in err and "--angles 17" in err


def test_small_demo_probe_first_then_bragg_from_it(tiled_service, tiled_layout, capsys):
    _, raw, processed = tiled_layout
    rc = run_demo(tiled_service.config, DemoOptions(**SMALL), tiled_uri=tiled_service.uri)
    out = capsys.readouterr().out
    assert rc == 0, out
    uids = dict(re.findall(r"^run (\w+)\s*: ([0-9a-f-]{36})$", out, flags=re.M))
    spiral, bragg = uids["forward_ptychography"], uids["bragg_ptychography"]

    # order: the spiral ran (and stopped) before the Bragg scan started
    assert raw[spiral].metadata["stop"]["time"] < raw[bragg].metadata["start"]["time"]
    assert list(uids) == ["alignment", "forward_ptychography", "bragg_ptychography"]

    # provenance: the final result's start probe is the spiral's forward-ptychography probe
    key = re.search(r"result /processed/(\S+)", out).group(1)
    md = processed[key].metadata
    assert md["raw_uid"] == bragg
    source = json.dumps(dict(md))
    m = re.search(r'"probe_source": "([^"]*)"', source)
    assert m is not None, source[:2000]
    assert m.group(1).startswith("file ") and f"(run {spiral})" in m.group(1)
    assert "-probe.h5" in m.group(1) and "model" not in m.group(1)

    # closing lines: R-factor, strain RMSE against the truth, the converged verdict
    r = float(re.search(r"final result: R-factor ([0-9.]+)", out).group(1))
    rmse = float(re.search(r"strain RMSE vs the simulator's truth in the lit crystal: ([0-9.e+-]+)", out).group(1))
    n_vox = int(re.search(r"\((\d+) voxels;", out).group(1))
    truth_rms = float(re.search(r"true strain RMS there ([0-9.e+-]+);", out).group(1))
    assert re.search(r"^converged: (yes|no) \(", out, flags=re.M)
    assert 0 < r < 0.5, out[-1200:]
    assert n_vox >= 10, out[-1200:]
    assert rmse < SMALL_STRAIN_RMSE_BOUND, out[-1500:]
    assert rmse < 0.6 * truth_rms, out[-1500:]     # the map carries the truth: far better than a map of zeros
