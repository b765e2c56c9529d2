"""Issue 20 point 5: the API of ``pxm demo --geometry NAME`` and ``pxm dfxm-demo --ferroelectric`` gives what the
commands give on the same input (same seeds → the same frames, the same reconstruction and scores), and fails
with the commands' one line.

The command (:func:`pxm.cli.main`, against the session Tiled server by ``--tiled-uri``) and the API function
(into the same server) run the same simulated scan; the two runs' frames in Tiled are compared, then what each
computed from them.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import pxm
from pxm.cli import main

GEOMETRY = "asymmetric-out-of-plane"


def _server(service) -> list[str]:
    return ["--tiled-uri", service.uri, "--api-key", service.config.api_key, "--data-dir",
            str(service.config.data_dir)]


def _json_line(out: str) -> dict:
    (line,) = [ln for ln in out.splitlines() if ln.startswith("{")]
    return json.loads(line)


# ------------------------------------------------------------------------------------------ general geometry
@pytest.mark.slow                                       # two small beamtimes through Tiled: ~40 s of CPU
def test_general_geometry_beamtime_of_the_api_equals_the_commands(tiled_service, tiled_layout, capsys):
    assert main(["demo", "--geometry", GEOMETRY, "--raster", "2", *_server(tiled_service)]) == 0
    cli = _json_line(capsys.readouterr().out)
    got = pxm.simulate_general_geometry(tiled_service, geometry=GEOMETRY, n_raster=2)
    api = got.summary
    assert got.uid == api["uid"] != cli["uid"]
    _, raw, _ = tiled_layout
    frames = [raw[s["uid"]]["primary"]["mpx_image"][:] for s in (cli, api)]
    assert frames[0].shape == (api["n_frames"], 20, 20) == (2 * 2 * 10, 20, 20)
    np.testing.assert_array_equal(frames[0], frames[1])                 # same seed: the same Poisson frames
    assert api["n_voxels"] == cli["n_voxels"] > 0
    assert api["r_factors"] == pytest.approx(cli["r_factors"], abs=2e-4)
    for key in ("strain_rmse", "tilt_x_rmse_rad", "tilt_y_rmse_rad", "strain_median"):
        assert api[key] == pytest.approx(cli[key], rel=1e-3, abs=1e-9), key   # float32 rounding of FFT plans only
    assert got.strain_rmse < 0.25 * api["truth"]["strain"]              # and it is right
    assert got.lines()[-1].startswith("strain RMSE vs the simulator's truth")


@pytest.mark.filterwarnings("ignore:Mean of empty slice")    # too small to score: NaN RMSEs, compared by R
def test_one_process_route_of_the_api_equals_the_commands(tmp_path, capsys):
    """``--one-process`` (no Bluesky/Tiled) at a tiny size: the same dataset file, the same R-factors."""
    import h5py

    argv = ["demo", "--geometry", GEOMETRY, "--one-process", "--raster", "2", "--angles", "6", "--roi", "12", "12"]
    assert main([*argv, "--data-dir", str(tmp_path / "cli")]) == 0
    cli = _json_line(capsys.readouterr().out)
    got = pxm.simulate_general_geometry(geometry=GEOMETRY, one_process=True, n_raster=2, n_angles=6, roi_px=(12, 12),
                                        data_dir=tmp_path / "api")
    api = got.summary
    assert got.uid is None and api["dataset"] == str(tmp_path / "api" / f"geometry-{GEOMETRY}" / "dataset.h5")
    with h5py.File(api["dataset"]) as a, h5py.File(cli["dataset"]) as c:
        np.testing.assert_array_equal(a["data/frames"][()], c["data/frames"][()])
    assert api["r_factors"] == pytest.approx(cli["r_factors"], abs=2e-4)
    assert api["control_without_e2_shear"]["r_factors"] == pytest.approx(
        cli["control_without_e2_shear"]["r_factors"], abs=2e-4)


@pytest.mark.parametrize("case", ["rectangular-roi", "no-raster"])
def test_general_geometry_errors_are_the_commands_line(case, tmp_path, capsys):
    if case == "rectangular-roi":
        argv, kw = ["--geometry", GEOMETRY, "--roi", "20", "24"], dict(geometry=GEOMETRY, roi_px=(20, 24))
    else:
        argv, kw = ["--geometry", GEOMETRY, "--raster", "0"], dict(geometry=GEOMETRY, n_raster=0)
    assert main(["demo", *argv, "--one-process", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    with pytest.raises(pxm.PxmError) as info:
        pxm.simulate_general_geometry(one_process=True, data_dir=tmp_path, **kw)
    assert info.value.cli_line == err
    assert not list(tmp_path.rglob("*.h5"))            # refused before any simulation
    with pytest.raises(pxm.PxmError, match="pxm.simulate_beamtime"):
        pxm.simulate_general_geometry(geometry="symmetric", one_process=True, data_dir=tmp_path)


# ------------------------------------------------------------------------------------------ ferroelectric
@pytest.mark.slow                                       # two 2-scan chains through Tiled: ~40 s
def test_ferroelectric_chain_of_the_api_equals_the_commands(tiled_service, tiled_layout, capsys):
    sizes = dict(n_px=16, grid=3, step_px=3, iterations=3)
    argv = ["--n-px", "16", "--grid", "3", "--step-px", "3", "--iterations", "3"]
    assert main(["dfxm-demo", "--ferroelectric", *_server(tiled_service), *argv]) == 0
    out = capsys.readouterr().out
    cli_uids = {ln.split()[1].strip("():"): ln.split()[3] for ln in out.splitlines() if ln.startswith("run (")}
    (cli_key,) = [ln.split("/processed/")[1] for ln in out.splitlines() if ln.startswith("published: ")]
    got = pxm.simulate_ferroelectric(tiled_service, **sizes)
    assert set(got.uids) == set(cli_uids) == {"c", "a"} and got.polarization_key != cli_key
    _, raw, processed = tiled_layout
    for variant in ("c", "a"):                                              # same seed: the same frames
        np.testing.assert_array_equal(raw[got.uids[variant]]["primary"]["cam_image"][:],
                                      raw[cli_uids[variant]]["primary"]["cam_image"][:])
    api_p, cli_p = (processed[k]["magnitude_c_per_m2"][:] for k in (got.polarization_key, cli_key))
    np.testing.assert_array_equal(np.isfinite(api_p), np.isfinite(cli_p))
    lit = np.isfinite(api_p)
    assert lit.mean() > 0.5
    np.testing.assert_allclose(api_p[lit], cli_p[lit], rtol=1e-4)       # the same chain, the same |P|
    np.testing.assert_allclose(got.result.maps.magnitude_c_per_m2[lit], api_p[lit], rtol=1e-6)
    assert math.isclose(float(np.nanmean(api_p)), 0.26, rel_tol=0.05)    # |P| ≈ Ps of BaTiO3 at 298 K


def test_ferroelectric_refuses_an_unreadable_data_folder_as_the_command(tiled_service, tmp_path, capsys):
    uri, key = tiled_service.uri, tiled_service.config.api_key
    elsewhere = tmp_path / "elsewhere"
    assert main(["dfxm-demo", "--ferroelectric", "--tiled-uri", uri, "--api-key", key, "--data-dir",
                 str(elsewhere)]) == 1
    err = capsys.readouterr().err.strip()
    with pytest.raises(pxm.PxmError) as info:
        pxm.simulate_ferroelectric(tiled_uri=uri, api_key=key, data_dir=elsewhere)
    assert info.value.cli_line == err and "cannot read detector files" in err
    assert not list(elsewhere.rglob("*.jsonl"))                        # no scan ran
