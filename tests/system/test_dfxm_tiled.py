"""FP-DFXM under the real RunEngine into the session Tiled server; reconstruction published and found."""

from __future__ import annotations

import uuid

import h5py
import numpy as np
import pytest

from analysis.dfxm import FPOptions
from pxm.dfxm import DFXMDemoOptions, publish_fp_run, reconstruct_fp_run, run_fp_dfxm_acquisition


@pytest.fixture
def raw_dir(tiled_service):
    d = tiled_service.config.raw_path / uuid.uuid4().hex[:8]
    d.mkdir(parents=True)
    return d


def test_fp_dfxm_scan_to_tiled_reconstruct_publish(tiled_service, tiled_layout, raw_dir, tmp_path):
    from tiled.queries import Key

    from pxm.cli import main

    _, raw, processed = tiled_layout
    opts = DFXMDemoOptions(n_px=16, n_side=3, step_px=3, exposure_s=0.05, iterations=20)
    uid = run_fp_dfxm_acquisition(raw, raw_dir, tmp_path / "docs", opts, log=lambda *a: None)
    run = raw[uid]
    start = run.metadata["start"]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert start["plan_name"] == "fp_dfxm_scan" and start["reflection"]["hkl"] == [0, 0, 2]
    frames = run["primary"]["cam_image"][:]
    assert frames.shape == (9, 16, 16) and frames.dtype == np.uint32
    (path,) = raw_dir.glob("cam_*.h5")
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(frames, f["/entry/data/data"][()])
        assert int(f["/entry/pxm/complete"][()]) == 1
    assert frames.sum(axis=(1, 2)).min() > 0

    out = reconstruct_fp_run(run, options=FPOptions(n_iterations=20))
    assert out.result.object.shape == (64, 64) and np.isfinite(out.result.error_history).all()
    res = publish_fp_run(processed, run, out)
    found = processed.search(Key("raw_uid") == uid)
    assert len(found) == 1
    (key,) = list(found)
    assert res.item["id"] == key
    pub = found[key]
    assert pub.metadata["raw_uid"] == uid and set(pub.metadata["zernike_rad"]) == {str(j) for j in range(4, 12)}
    assert "defocus_m" in pub.metadata["misalignment"]
    np.testing.assert_allclose(pub["object"][:], out.result.object.astype(np.complex64))
    assert pub["strain"].shape == (64, 64) and pub["pupil"].shape == (16, 16)
    assert pub["zernike_coefficients_rad"][:].tolist() == pytest.approx(list(out.result.zernike_rad.values()))
    assert "analysis" not in raw[uid].metadata                         # raw run untouched: found by raw_uid

    rc = main(["fp-reconstruct", "--run", uid, "--tiled-uri", tiled_service.uri, "--api-key",
               tiled_service.config.api_key, "--iterations", "5"])
    assert rc == 0
    assert len(processed.search(Key("raw_uid") == uid)) == 2
    assert main(["fp-reconstruct", "--run", "no-such-run", "--tiled-uri", tiled_service.uri, "--api-key",
                 tiled_service.config.api_key]) == 1


def test_dfxm_demo_closing_lines_name_the_key_file_not_the_key(tiled_service, tmp_path, capsys):
    """`pxm dfxm-demo` against a running server: the key is in DATA/api-key (0600) and on no printed line."""
    import dataclasses
    import stat

    from pxm.dfxm import run_dfxm_demo

    key = tiled_service.config.api_key
    raw_dir = tiled_service.config.raw_path / uuid.uuid4().hex[:8]
    server = dataclasses.replace(tiled_service.config, data_dir=tmp_path / "data", raw_dir=raw_dir)
    opts = DFXMDemoOptions(n_px=16, n_side=3, step_px=3, exposure_s=0.05, iterations=3)
    assert run_dfxm_demo(server, opts, tiled_uri=tiled_service.uri) == 0
    out = capsys.readouterr()
    key_file = server.data_dir / "api-key"
    assert key_file.read_text().strip() == key and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key not in out.out and key not in out.err
    assert f"PXM_TILED_API_KEY=$(cat {key_file})" in out.out
