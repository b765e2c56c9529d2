"""Dataset/results/CXI files: round trips and clear errors for bad input."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from analysis.dataset import (
    BraggDataset,
    append_results,
    read_dataset,
    read_results,
    write_cxi,
    write_dataset,
    write_results,
)
from analysis.geometry import seed_geometry
from analysis.strain import StrainMaps

GEOM = seed_geometry(n_rows_px=12, n_cols_px=10, n_angles=4, upsampling=3)


def _grid(n_pos=3, dtype=np.float32):
    rng = np.random.default_rng(0)
    frames = rng.poisson(5.0, size=(n_pos, GEOM.n_angles, 12, 10)).astype(dtype)
    angles = GEOM.theta_bragg_deg + (np.arange(GEOM.n_angles) - 2) * GEOM.rocking_step_deg
    mask = np.ones((12, 10), bool)
    mask[:, 5] = False
    return BraggDataset(
        frames=frames, rocking_angle_deg=np.tile(angles, (n_pos, 1)),
        stage_position_m=rng.normal(scale=1e-7, size=(n_pos, GEOM.n_angles, 3)), detector_mask=mask,
        geometry=GEOM, sample={"name": "W foil", "hkl": [2, 2, 0], "thickness_m": 4.5e-7, "notes": {"a": 1}},
        provenance={"beamline": "ID01-sim", "scan_id": 42})


def _assert_equal(a: BraggDataset, b: BraggDataset):
    for f in ("frames", "rocking_angle_deg", "stage_position_m", "detector_mask"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert getattr(a, f).dtype == getattr(b, f).dtype
    assert a.geometry == b.geometry
    assert a.sample == b.sample
    assert all(b.provenance[k] == v for k, v in a.provenance.items())


@pytest.mark.parametrize("dtype", [np.float32, np.uint32])
def test_grid_round_trip(tmp_path, dtype):
    ds = _grid(dtype=dtype)
    write_dataset(tmp_path / "d.h5", ds)
    back = read_dataset(tmp_path / "d.h5")
    assert back.layout == "grid"
    _assert_equal(ds, back)
    with h5py.File(tmp_path / "d.h5") as f:  # units everywhere
        assert f["data/rocking_angle_deg"].attrs["units"] == "deg"
        assert f["data/stage_position_m"].attrs["units"] == "m"
        assert f["geometry/energy_kev"].attrs["units"] == "keV"
        assert f["geometry/derived/voxel_size_m"].attrs["units"] == "m"
        assert f["sample"].attrs["thickness_m@units"] == "m"


def test_flat_round_trip(tmp_path):
    g = _grid()
    n = g.frames.shape[0] * g.frames.shape[1]
    pi, ai = np.divmod(np.arange(n), GEOM.n_angles)
    ds = dataclasses.replace(g, frames=g.frames.reshape(n, 12, 10), rocking_angle_deg=g.rocking_angle_deg.ravel(),
                             stage_position_m=g.stage_position_m.reshape(n, 3), position_index=pi, angle_index=ai)
    write_dataset(tmp_path / "f.h5", ds)
    back = read_dataset(tmp_path / "f.h5")
    assert back.layout == "flat"
    _assert_equal(ds, back)
    np.testing.assert_array_equal(back.angle_index, ai)


def _corrupt(tmp_path, edit):
    p = tmp_path / "bad.h5"
    write_dataset(p, _grid())
    with h5py.File(p, "r+") as f:
        edit(f)
    return p


def _set(key, value):
    def edit(f):
        del f[key]
        f[key] = value
    return edit


@pytest.mark.parametrize("edit,match", [
    (lambda f: f.__delitem__("geometry"), r"/geometry: group missing"),
    (lambda f: f["geometry"].__delitem__("energy_kev"), r"/geometry: .*energy_kev"),
    (_set("data/frames", np.full((3, 4, 12, 10), np.nan, np.float32)), r"/data/frames: .*NaN"),
    (_set("data/frames", -np.ones((3, 4, 12, 10), np.float32)), r"/data/frames: .*negative"),
    (_set("data/frames", np.ones((3, 4, 12, 11), np.float32)), r"/data/detector_mask: shape"),
    (_set("data/rocking_angle_deg", np.zeros((3, 5))), r"/data/rocking_angle_deg: shape \(3, 5\)"),
    (_set("data/stage_position_m", np.zeros((3, 4, 2))), r"/data/stage_position_m: shape"),
    (_set("data/frames", np.ones((3, 5, 12, 10), np.float32)), r"/data/rocking_angle_deg|5 angles"),
    (lambda f: f["data"].__delitem__("detector_mask"), r"/data/detector_mask: dataset missing"),
])
def test_bad_files_give_clear_errors(tmp_path, edit, match):
    p = _corrupt(tmp_path, edit)
    with pytest.raises(ValueError, match=match) as exc:
        read_dataset(p)
    assert str(p) in str(exc.value)  # names the file


def test_bad_in_memory_dataset_and_missing_file(tmp_path):
    g = _grid()
    with pytest.raises(ValueError, match="n_rows_px"):
        dataclasses.replace(g, geometry=dataclasses.replace(GEOM, n_rows_px=13))
    with pytest.raises(ValueError, match="position_index: missing"):
        dataclasses.replace(g, frames=g.frames.reshape(-1, 12, 10), rocking_angle_deg=g.rocking_angle_deg.ravel(),
                            stage_position_m=g.stage_position_m.reshape(-1, 3))
    with pytest.raises(ValueError, match="no such file"):
        read_dataset(tmp_path / "nope.h5")


def test_results_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    obj = (rng.random((6, 5, 4)) + 1j * rng.random((6, 5, 4))).astype(np.complex64)
    probe = (rng.random((5, 4)) + 1j).astype(np.complex64)
    mask = np.ones((6, 5, 4), bool)
    maps = StrainMaps(eps_zz=rng.random((6, 5, 4)), omega_x_rad=rng.random((6, 5, 4)),
                      omega_y_rad=rng.random((6, 5, 4)), amplitude=np.abs(obj), mask=mask,
                      voxel_size_m=(1e-8, 2e-8, 3e-8), origin_m=(0.0, -1e-8, 2e-8))

    @dataclasses.dataclass(frozen=True)
    class Opts:
        n_iterations: int = 5
        alpha: float = 1.0

    write_results(tmp_path / "r.h5", object=obj, probe=probe, voxel_size_m=(1e-8, 2e-8, 3e-8),
                  background=np.zeros((12, 10)), strain=maps, metrics={"e_rho": 0.01, "r_factor": 0.1},
                  parameters={"solver": Opts()}, timings_s={"total_s": 1.5}, error_history=[1.0, 0.5],
                  geometry=GEOM)
    r = read_results(tmp_path / "r.h5")
    np.testing.assert_array_equal(r["object"], obj)
    np.testing.assert_array_equal(r["probe"], probe)
    np.testing.assert_array_equal(r["strain"]["reconstruction"].eps_zz, maps.eps_zz)
    assert r["strain"]["reconstruction"].voxel_size_m == maps.voxel_size_m
    assert r["metrics"] == {"e_rho": 0.01, "r_factor": 0.1}
    assert r["parameters"] == {"solver": {"n_iterations": 5, "alpha": 1.0}}
    assert r["timings_s"] == {"total_s": 1.5} and r["geometry"] == GEOM


def test_results_in_two_stages_with_placement_and_errors(tmp_path):
    """The reconstruction first ("iterations complete", with the object's placement), then strain, metrics and a
    failed step appended; every stage reads back."""
    from analysis.bragg.operators import object_placement

    rng = np.random.default_rng(2)
    obj = (rng.random((6, 5, 4)) + 1j).astype(np.complex64)
    pl = object_placement(GEOM, np.array([2.5, 1.0, 3.0]))
    path = tmp_path / "r.h5"
    write_results(path, object=obj, probe=np.ones((5, 4), complex), voxel_size_m=GEOM.voxel_size_m,
                  metrics={"r_factor_epie": 0.2}, placement=pl, status="iterations complete")
    r = read_results(path)
    assert r["status"] == "iterations complete" and r["postprocessing_errors"] == {} and "strain" not in r
    np.testing.assert_allclose(r["placement"].position_m([2.5, 1.0, 3.0]), 0.0, atol=1e-18)
    np.testing.assert_allclose(r["placement"].position_m([3, 1, 3]) - r["placement"].position_m([2, 1, 3]),
                               GEOM.voxel_size_m[0] * GEOM.lab_axes()["e1"], rtol=1e-12)
    with h5py.File(path, "r") as f:
        assert f["object"].attrs["origin_m"].shape == (3,) and f["object"].attrs["axes_lab"].shape == (3, 3)
    maps = StrainMaps(eps_zz=np.zeros((6, 5, 4)), omega_x_rad=np.zeros((6, 5, 4)), omega_y_rad=np.zeros((6, 5, 4)),
                      amplitude=np.abs(obj), mask=np.ones((6, 5, 4), bool), voxel_size_m=GEOM.voxel_size_m,
                      origin_m=(0.0, 0.0, 0.0))
    append_results(path, strain={"reconstruction": maps}, metrics={"valid_strain_voxels": 120},
                   postprocessing_errors={"figures": "OSError: disk full"}, timings_s={"strain_s": 0.5},
                   status="complete with post-processing errors")
    r = read_results(path)
    assert r["metrics"] == {"r_factor_epie": 0.2, "valid_strain_voxels": 120}
    assert r["postprocessing_errors"] == {"figures": "OSError: disk full"} and r["timings_s"]["strain_s"] == 0.5
    assert r["status"] == "complete with post-processing errors" and set(r["strain"]) == {"reconstruction"}
    with pytest.raises(ValueError, match="status 'done'"):
        append_results(path, status="done")
    with pytest.raises(ValueError, match="placement.voxel_size_m"):
        write_results(path, object=obj, probe=obj[0], voxel_size_m=(1e-8, 1e-8, 1e-8), placement=pl)


@pytest.mark.parametrize("shape", [(8, 9), (4, 5, 6)])
def test_cxi_export(tmp_path, shape):
    img = np.exp(1j * np.arange(np.prod(shape)).reshape(shape)).astype(np.complex64)
    write_cxi(tmp_path / "x.cxi", img, pixel_size_m=1.89e-8, probe=np.ones((8, 9), complex), energy_kev=8.0,
              detector_distance_m=1.4, detector_pixel_size_m=55e-6, process={"algorithm": "epie"})
    with h5py.File(tmp_path / "x.cxi") as f:
        assert f["cxi_version"][()] == 160
        np.testing.assert_array_equal(f["entry_1/image_1/data"][()], img)
        np.testing.assert_array_equal(f["entry_1/data_1/data"][()], img)
        assert f["entry_1/image_2/data_type"][()] == b"probe"
        assert f["entry_1/instrument_1/source_1/energy"][()] == pytest.approx(8e3 * 1.602176634e-19)
        assert f["entry_1/instrument_1/detector_1/distance"][()] == 1.4
        np.testing.assert_allclose(f["entry_1/image_1/image_size"][()], np.array(shape) * 1.89e-8)
    with pytest.raises(ValueError, match="2D or 3D"):
        write_cxi(tmp_path / "y.cxi", np.ones(4), pixel_size_m=1e-8)
