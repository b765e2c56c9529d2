"""NeXus/CXI (NXcxi_ptycho) export and import of raw Bragg-ptychography scans."""

from __future__ import annotations

import dataclasses
import math

import h5py
import numpy as np
import pytest
from nexusformat.nexus import nxload

from analysis.cxi_nexus import NXCXI_PTYCHO_REQUIRED, check_nxcxi_ptycho, export_cxi_dataset, import_cxi_dataset
from analysis.dataset import BraggDataset, read_dataset, scan_axes, write_dataset
from analysis.geometry import seed_geometry

GEOM = seed_geometry(n_rows_px=12, n_cols_px=10, n_angles=4, upsampling=3)
E_J = 8.0e3 * 1.602176634e-19


def _grid(n_pos: int = 3) -> BraggDataset:
    rng = np.random.default_rng(1)
    frames = rng.poisson(5.0, size=(n_pos, GEOM.n_angles, 12, 10)).astype(np.uint32)
    angles = GEOM.theta_bragg_deg + (np.arange(GEOM.n_angles) - 2) * GEOM.rocking_step_deg
    mask = np.ones((12, 10), bool)
    mask[3, :] = False
    pos = rng.normal(scale=1e-6, size=(n_pos, 1, 3)) + rng.normal(scale=1e-9, size=(n_pos, GEOM.n_angles, 3))
    return BraggDataset(frames=frames, rocking_angle_deg=np.tile(angles, (n_pos, 1)), stage_position_m=pos,
                        detector_mask=mask, geometry=GEOM, sample={"name": "W foil", "thickness_m": 4.5e-7},
                        provenance={"beamline": "ID01-sim", "scan_id": 7})


def _assert_same(a: BraggDataset, b: BraggDataset) -> None:
    assert a.layout == b.layout
    for name in ("frames", "rocking_angle_deg", "stage_position_m", "detector_mask"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert getattr(a, name).dtype == getattr(b, name).dtype, name
    assert a.geometry == b.geometry
    assert a.sample == b.sample
    assert all(b.provenance[k] == v for k, v in a.provenance.items())   # write_dataset adds software, version


def test_round_trip_pxm_cxi_pxm_is_exact(tmp_path):
    ds = _grid()
    write_dataset(tmp_path / "d.h5", ds)
    export_cxi_dataset(tmp_path / "d.cxi", read_dataset(tmp_path / "d.h5"))
    got = import_cxi_dataset(tmp_path / "d.cxi")
    assert got.source == "pxm"
    write_dataset(tmp_path / "back.h5", got.dataset)
    _assert_same(ds, read_dataset(tmp_path / "back.h5"))


def test_flat_layout_round_trip(tmp_path):
    g = _grid()
    keep = [0, 1, 2, 3, 5, 6, 9, 10, 11, 4]       # a partial, re-ordered scan
    n_ang = GEOM.n_angles
    ds = dataclasses.replace(
        g, frames=g.frames.reshape(-1, 12, 10)[keep], rocking_angle_deg=g.rocking_angle_deg.reshape(-1)[keep],
        stage_position_m=g.stage_position_m.reshape(-1, 3)[keep],
        position_index=np.array(keep) // n_ang, angle_index=np.array(keep) % n_ang)
    export_cxi_dataset(tmp_path / "f.cxi", ds)
    back = import_cxi_dataset(tmp_path / "f.cxi").dataset
    _assert_same(ds, back)
    np.testing.assert_array_equal(back.position_index, ds.position_index)
    np.testing.assert_array_equal(back.angle_index, ds.angle_index)


def test_written_file_follows_nxcxi_ptycho_with_si_units(tmp_path):
    ds = _grid()
    export_cxi_dataset(tmp_path / "d.cxi", ds)
    assert check_nxcxi_ptycho(tmp_path / "d.cxi") == []
    root = nxload(str(tmp_path / "d.cxi"), "r")
    try:
        entry = root["entry_1"]
        assert entry.nxclass == "NXentry" and str(entry["definition"].nxvalue) == "NXcxi_ptycho"
        # nexusformat finds the plottable signal through @signal / @axes
        nxdata = entry["data"]
        assert nxdata.nxsignal.nxname == "data" and nxdata.nxsignal.shape == (3 * GEOM.n_angles, 12, 10)
        assert [a.nxname for a in nxdata.nxaxes][0] == "x"
        det = entry["instrument_1/detector_1"]
        assert det["distance"].attrs["units"] == "m" and float(det["distance"]) == GEOM.detector_distance_m
        assert det["x_pixel_size"].attrs["units"] == "m" and float(det["x_pixel_size"]) == GEOM.pixel_size_m
        src = entry["instrument_1/source_1"]
        assert src["energy"].attrs["units"] == "J" and float(src["energy"]) == pytest.approx(E_J, rel=1e-12)
        beam = entry["instrument_1/beam_1/incident_beam_energy"]
        assert beam.attrs["units"] == "J" and float(beam) == pytest.approx(E_J, rel=1e-12)
        tr = entry["sample_1/transformations"]
        assert tr.nxclass == "NXtransformations"
        assert tr["rocking_angle"].attrs["transformation_type"] == "rotation"
        np.testing.assert_array_equal(tr["rocking_angle"].nxdata, ds.rocking_angle_deg.reshape(-1))
        np.testing.assert_array_equal(tr["z"].nxdata, ds.stage_position_m.reshape(-1, 3)[:, 2])
        tt = entry["instrument_1/detector_1/transformations/two_theta"]
        assert float(tt) == pytest.approx(2 * GEOM.theta_bragg_deg)
        np.testing.assert_array_equal(entry["data_1/data"].nxdata, ds.frames.reshape(-1, 12, 10))
    finally:
        root.nxfile.close()
    with h5py.File(tmp_path / "d.cxi") as f:
        assert f["cxi_version"][()] == 160
        np.testing.assert_array_equal(f["entry_1/instrument_1/detector_1/pixel_mask"][()] == 0, ds.detector_mask)


def test_required_list_catches_what_is_missing(tmp_path):
    export_cxi_dataset(tmp_path / "d.cxi", _grid())
    with h5py.File(tmp_path / "d.cxi", "a") as f:
        del f["entry_1/instrument_1/detector_1/distance"]
        del f["entry_1/data"].attrs["signal"]
        del f["entry_1/instrument_1/beam_1/incident_beam_energy"].attrs["units"]
        f["entry_1/sample_1"].attrs["NX_class"] = "NXcollection"
    problems = check_nxcxi_ptycho(tmp_path / "d.cxi")
    assert "/entry_1/instrument_1/detector_1/distance: missing (field)" in problems
    assert "/entry_1/data@signal: attribute missing" in problems
    assert "/entry_1/instrument_1/beam_1/incident_beam_energy@units: attribute missing" in problems
    assert any(p.startswith("/entry_1/sample_1: expected a group of class NXsample") for p in problems)
    assert len(problems) == 4
    assert len(NXCXI_PTYCHO_REQUIRED) > 30


def _foreign(path, *, n_pos=2, angles_rad=True, drop=None, n_frames_kept=None):
    """A minimal NXcxi_ptycho-style file as another facility would write it: SI units, no pxm extras,
    frames in a shuffled order, photon energy only in the CXI place, rocking angle in rad."""
    rng = np.random.default_rng(3)
    n_ang, n_frames = 5, n_pos * 5
    theta_deg = 30.0
    step_deg = 0.01
    ang = theta_deg + (np.arange(n_ang) - 2) * step_deg
    pos = np.array([[0.0, 0.0, 0.0], [2e-7, -1e-7, 0.0], [4e-7, 0.0, 1e-8]])[:n_pos]
    order = rng.permutation(n_frames)
    p_idx, a_idx = np.divmod(order, n_ang)
    frames = rng.poisson(3.0, size=(n_frames, 8, 6)).astype(np.int32)
    fields = {
        "entry_1/instrument_1/detector_1/data": (frames, None),
        "entry_1/instrument_1/detector_1/distance": (1.2, "m"),
        "entry_1/instrument_1/detector_1/x_pixel_size": (75e-6, "m"),
        "entry_1/instrument_1/detector_1/y_pixel_size": (75.0, "um"),
        "entry_1/instrument_1/detector_1/transformations/two_theta": (2 * theta_deg, "degrees"),
        "entry_1/instrument_1/source_1/energy": (9.0e3 * 1.602176634e-19, "J"),
        "entry_1/sample_1/transformations/rocking_angle": (
            np.radians(ang[a_idx]) if angles_rad else ang[a_idx], "rad" if angles_rad else "deg"),
        "entry_1/sample_1/geometry_1/translation": (pos[p_idx], "m"),
    }
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 160
        for key, (value, units) in fields.items():
            if key == drop:
                continue
            if n_frames_kept is not None and np.ndim(value) >= 1:
                value = value[:n_frames_kept]
            d = f.create_dataset(key, data=value)
            if units:
                d.attrs["units"] = units
    return frames, order, ang, pos, theta_deg, step_deg


def test_import_minimal_foreign_file(tmp_path):
    frames, order, ang, pos, theta_deg, step_deg = _foreign(tmp_path / "other.cxi")
    got = import_cxi_dataset(tmp_path / "other.cxi", upsampling=2)
    ds = got.dataset
    assert got.source == "standard fields"
    assert ds.layout == "grid" and ds.frames.shape == (2, 5, 8, 6)
    g = ds.geometry
    assert g.energy_kev == pytest.approx(9.0, rel=1e-12)
    assert g.detector_distance_m == 1.2 and g.pixel_size_m == pytest.approx(75e-6, rel=1e-12)
    assert g.theta_bragg_deg == pytest.approx(theta_deg, rel=1e-12)
    assert g.rocking_step_deg == pytest.approx(step_deg, rel=1e-9) and g.n_angles == 5 and g.upsampling == 2
    assert 2 * g.d_spacing_m * math.sin(math.radians(theta_deg)) == pytest.approx(g.wavelength_m, rel=1e-12)
    # positions are numbered in order of first appearance; frame (p, a) is the file's frame at that place
    first = [int(order[k]) // 5 for k in range(len(order))]
    numbering = list(dict.fromkeys(first))
    for k, fr in enumerate(order):
        p_true, a = divmod(int(fr), 5)
        p = numbering.index(p_true)
        np.testing.assert_array_equal(ds.frames[p, a], frames[k])
        np.testing.assert_allclose(ds.rocking_angle_deg[p, a], ang[a], rtol=1e-14)
        np.testing.assert_array_equal(ds.stage_position_m[p, a], pos[p_true])
    assert ds.detector_mask.all()
    assert any("every pixel taken as live" in n for n in got.notes)
    # it is a valid pxm dataset file, and the engine's scan axes come out of it
    write_dataset(tmp_path / "d.h5", ds)
    back = read_dataset(tmp_path / "d.h5")
    stage, offsets = scan_axes(back.rocking_angle_deg, back.stage_position_m, back.geometry)
    np.testing.assert_array_equal(stage, pos[numbering])
    np.testing.assert_allclose(offsets, (np.arange(5) - 2) * step_deg, atol=1e-12)


def test_incomplete_foreign_scan_becomes_flat_layout(tmp_path):
    frames, order, ang, pos, *_ = _foreign(tmp_path / "part.cxi", n_frames_kept=7)
    got = import_cxi_dataset(tmp_path / "part.cxi")
    ds = got.dataset
    assert ds.layout == "flat" and ds.frames.shape == (7, 8, 6)
    np.testing.assert_array_equal(ds.frames, frames[:7])
    p_true, a_true = np.divmod(order[:7], 5)
    np.testing.assert_array_equal(ds.angle_index, a_true - a_true.min())
    np.testing.assert_array_equal(ds.stage_position_m, pos[p_true])
    # one position index per distinct stage position
    assert all(len(set(p_true[ds.position_index == k])) == 1 for k in np.unique(ds.position_index))
    assert any("flat layout, 7 frames" in n for n in got.notes)


@pytest.mark.parametrize(("drop", "named"), [
    ("entry_1/instrument_1/detector_1/data", "/entry_1/instrument_1/detector_1/data: missing"),
    ("entry_1/instrument_1/detector_1/distance", "/entry_1/instrument_1/detector_1/distance: missing"),
    ("entry_1/instrument_1/source_1/energy", "/entry_1/instrument_1/beam_1/incident_beam_energy: missing"),
    ("entry_1/sample_1/transformations/rocking_angle", "/entry_1/sample_1/transformations/rocking_angle: missing"),
    ("entry_1/sample_1/geometry_1/translation", "/entry_1/instrument_1/detector_1/translation: missing"),
    ("entry_1/instrument_1/detector_1/transformations/two_theta", "transformations/two_theta: missing"),
    ("entry_1/instrument_1/detector_1/x_pixel_size", "/entry_1/instrument_1/detector_1/x_pixel_size: missing"),
])
def test_missing_field_is_named(tmp_path, drop, named):
    _foreign(tmp_path / "bad.cxi", drop=drop)
    with pytest.raises(ValueError) as err:
        import_cxi_dataset(tmp_path / "bad.cxi")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'bad.cxi'}: ") and named in msg and "\n" not in msg


def test_bad_units_and_edited_pxm_file_fail_clearly(tmp_path):
    _foreign(tmp_path / "u.cxi")
    with h5py.File(tmp_path / "u.cxi", "a") as f:
        del f["entry_1/sample_1/transformations/rocking_angle"].attrs["units"]
    with pytest.raises(ValueError, match="rocking_angle: @units missing"):
        import_cxi_dataset(tmp_path / "u.cxi")
    export_cxi_dataset(tmp_path / "p.cxi", _grid())
    with h5py.File(tmp_path / "p.cxi", "a") as f:
        f["entry_1/instrument_1/detector_1/distance"][()] = 2.0
    with pytest.raises(ValueError, match="distance: 2.0 disagrees with pxm_1/geometry"):
        import_cxi_dataset(tmp_path / "p.cxi")
    with pytest.raises(ValueError, match="no such file"):
        import_cxi_dataset(tmp_path / "none.cxi")
