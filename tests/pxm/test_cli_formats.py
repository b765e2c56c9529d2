"""``pxm export-cxi``, ``import-cxi``, ``export-vtk``: exit codes, messages and the files they write."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from analysis.bragg.operators.scan import object_placement
from analysis.dataset import BraggDataset, read_dataset, write_dataset, write_results
from analysis.geometry import seed_geometry
from pxm.cli import main

GEOM = seed_geometry(n_rows_px=8, n_cols_px=6, n_angles=3, upsampling=2)


def _dataset(path):
    rng = np.random.default_rng(2)
    angles = GEOM.theta_bragg_deg + (np.arange(3) - 1) * GEOM.rocking_step_deg
    ds = BraggDataset(frames=rng.poisson(4.0, size=(2, 3, 8, 6)).astype(np.float32),
                      rocking_angle_deg=np.tile(angles, (2, 1)),
                      stage_position_m=np.repeat(np.array([[0.0, 0.0, 0.0], [3e-7, 0.0, 0.0]])[:, None], 3, axis=1),
                      detector_mask=np.ones((8, 6), bool), geometry=GEOM, sample={"name": "Au crystal"})
    write_dataset(path, ds)
    return ds


def test_export_then_import_cxi(tmp_path, capsys):
    ds = _dataset(tmp_path / "d.h5")
    assert main(["export-cxi", str(tmp_path / "d.h5"), "-o", str(tmp_path / "d.cxi")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'd.cxi'}: NXcxi_ptycho (CXI 160), 6 frames 8×6, grid layout" in out
    assert main(["import-cxi", str(tmp_path / "d.cxi"), "-o", str(tmp_path / "back.h5")]) == 0
    out = capsys.readouterr().out
    assert "read pxm: grid layout, frames (2, 3, 8, 6)" in out and "next: pxm reconstruct" in out
    back = read_dataset(tmp_path / "back.h5")
    np.testing.assert_array_equal(back.frames, ds.frames)
    np.testing.assert_array_equal(back.stage_position_m, ds.stage_position_m)
    assert back.geometry == ds.geometry


def test_import_cxi_missing_field_exits_1_with_one_line(tmp_path, capsys):
    _dataset(tmp_path / "d.h5")
    main(["export-cxi", str(tmp_path / "d.h5"), "-o", str(tmp_path / "d.cxi")])
    capsys.readouterr()
    with h5py.File(tmp_path / "d.cxi", "a") as f:
        del f["entry_1/sample_1/transformations/rocking_angle"]
    assert main(["import-cxi", str(tmp_path / "d.cxi"), "-o", str(tmp_path / "x.h5")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("pxm import-cxi: error: ")
    assert "/entry_1/sample_1/transformations/rocking_angle: missing" in err
    assert not (tmp_path / "x.h5").exists()


def test_export_cxi_of_a_non_dataset_exits_1(tmp_path, capsys):
    assert main(["export-cxi", str(tmp_path / "none.h5"), "-o", str(tmp_path / "d.cxi")]) == 1
    assert "pxm export-cxi: error: " in capsys.readouterr().err and not (tmp_path / "d.cxi").exists()


def test_export_vtk(tmp_path, capsys):
    obj = np.ones((4, 3, 2), np.complex64)
    write_results(tmp_path / "r.h5", object=obj, probe=obj[0], voxel_size_m=GEOM.voxel_size_m,
                  placement=object_placement(GEOM, np.zeros(3)))
    assert main(["export-vtk", str(tmp_path / "r.h5"), "-o", str(tmp_path / "o.vti")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'o.vti'}: VTK ImageData 4×3×2 in the sample frame (m)" in out
    assert "no /support in the results" in out
    assert (tmp_path / "o.vti").read_bytes().startswith(b'<?xml version="1.0"?>')
    assert main(["export-vtk", str(tmp_path / "r.h5"), "-o", str(tmp_path / "o.png")]) == 1
    assert "unknown VTK suffix '.png'" in capsys.readouterr().err


def test_usage_error_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export-vtk", str(tmp_path / "r.h5")])          # -o is required
    assert exc.value.code == 2
    assert "the following arguments are required: -o/--output" in capsys.readouterr().err
