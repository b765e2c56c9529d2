"""Probe files (docs/dataset-format.md §4): beam plane with rectangular pixels, (r2, r3) section, 3D probes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from analysis.bragg.probe_file import p2_from_probe_file, read_probe_file, write_probe_file
from analysis.bragg.probe_init import ProbeInitOptions, oblique_matrix, p2_plane_coordinates_m
from analysis.geometry import seed_geometry


@pytest.fixture
def geometry():
    return seed_geometry(n_rows_px=32, n_cols_px=32, n_angles=9, rocking_step_deg=0.005, upsampling=2)


def _gaussian(v_m, h_m, centre=(0.0, 0.0)):
    return np.exp(-0.5 * (((v_m - centre[0]) / 0.8e-6) ** 2 + ((h_m - centre[1]) / 0.5e-6) ** 2)
                  + 1j * 3e6 * (h_m - centre[1]))


def _rectangular_beam_plane(geometry, centre=(0.0, 0.0)):
    """(probe (V, H), (dv, dh)): pixels 4× finer than P2 along V and 2× along H, P2 nodes on pixels."""
    _, dr2, dr3 = geometry.voxel_size_m
    dv, dh = abs(oblique_matrix(geometry)[0, 1]) * dr3 / 4, dr2 / 2
    v = ((np.arange(301) - 150) * dv)[:, None]
    h = ((np.arange(97) - 48) * dh)[None, :]
    return _gaussian(v, h, centre), (dv, dh)


def test_rectangular_pixel_file_is_read_and_resampled_exactly(geometry, tmp_path):
    centre = (0.3e-6, -0.2e-6)
    perp, (dv, dh) = _rectangular_beam_plane(geometry, centre)
    write_probe_file(tmp_path / "p.h5", perp, pixel_size_m=(dv, dh), metadata={"raw_uid": "abc"})
    with h5py.File(tmp_path / "p.h5") as f:
        np.testing.assert_array_equal(f["probe"].attrs["pixel_size_m"], [dv, dh])
        assert f["probe"].attrs["frame"] == "beam"
    pf = read_probe_file(tmp_path / "p.h5")
    assert pf.axes == ("p1", "p2") and pf.spacing_m == (dv, dh) and pf.metadata == {"raw_uid": "abc"}
    p2, how = p2_from_probe_file(pf, geometry)
    pv, ph = p2_plane_coordinates_m(geometry)
    truth = _gaussian(pv, ph, centre)                                   # off-centre: not re-centred
    assert np.max(np.abs(p2 - truth)) < 1e-12
    n2, n3 = geometry.recon_shape[1:]
    assert how == f"resampled onto P2 ({n2}×{n3}), not re-centred, no blur"
    assert pf.describe() == f"2D beam plane (V × H) 301×97 px of {dv * 1e9:.4g}×{dh * 1e9:.4g} nm"
    p2r, how = p2_from_probe_file(pf, geometry, options=ProbeInitOptions(recentre=True, blur_px=0.4))
    assert how.endswith("re-centred, blur σ 0.4 P2 px") and not np.allclose(p2r, p2, atol=1e-3)


def test_old_files_with_one_pixel_size_still_read(geometry, tmp_path):
    perp = _gaussian(*(((np.arange(400) - 200) * 10e-9)[s] for s in ((slice(None), None), (None, slice(None)))))
    with h5py.File(tmp_path / "old.h5", "w") as f:                     # as pxm probe wrote it until now
        f.attrs["format"] = "pxm-probe"
        d = f.create_dataset("probe", data=perp)
        d.attrs["pixel_size_m"] = 10e-9
        d.attrs["axes"] = "p1 (vertical, V), p2 (horizontal, H); beam-plane probe"
        f.attrs["metadata"] = "{}"
    pf = read_probe_file(tmp_path / "old.h5")
    assert pf.axes == ("p1", "p2") and pf.spacing_m == (10e-9, 10e-9)
    write_probe_file(tmp_path / "new.h5", perp, pixel_size_m=10e-9)
    with h5py.File(tmp_path / "new.h5") as f:
        assert np.ndim(f["probe"].attrs["pixel_size_m"]) == 0               # a square pixel stays one number


def test_section_file_on_the_p2_grid_is_used_as_is(geometry, tmp_path):
    n2, n3 = geometry.recon_shape[1:]
    rng = np.random.default_rng(3)
    sec = rng.normal(size=(n2, n3)) + 1j * rng.normal(size=(n2, n3))
    write_probe_file(tmp_path / "s.h5", sec, pixel_size_m=geometry.voxel_size_m[1:], axes="r2, r3")
    p2, how = p2_from_probe_file(read_probe_file(tmp_path / "s.h5"), geometry)
    np.testing.assert_array_equal(p2, sec)
    assert how.startswith(f"used as is on P2 ({n2}×{n3})")


def test_3d_reconstruction_frame_probe_gives_its_central_r1_slice(geometry, tmp_path):
    n1, n2, n3 = geometry.recon_shape
    rng = np.random.default_rng(4)
    vol = rng.normal(size=(n1, n2, n3)) + 1j * rng.normal(size=(n1, n2, n3))
    write_probe_file(tmp_path / "v.h5", vol, voxel_size_m=geometry.voxel_size_m, axes="r1, r2, r3")
    pf = read_probe_file(tmp_path / "v.h5")
    assert pf.axes == ("r1", "r2", "r3") and pf.frame == "reconstruction"
    p2, how = p2_from_probe_file(pf, geometry)
    np.testing.assert_array_equal(p2, vol[n1 // 2])
    assert how.startswith(f"central r1 slice (index {n1 // 2}), used as is on P2")


def test_3d_beam_frame_probe_extruded_along_k_in_equals_its_plane(geometry, tmp_path):
    perp, (dv, dh) = _rectangular_beam_plane(geometry, (0.1e-6, 0.2e-6))
    write_probe_file(tmp_path / "b.h5", np.repeat(perp[:, :, None], 4, axis=2), voxel_size_m=(dv, dh, 50e-9),
                     axes="p1, p2, p3")
    p2, how = p2_from_probe_file(read_probe_file(tmp_path / "b.h5"), geometry)
    pv, ph = p2_plane_coordinates_m(geometry)
    assert np.max(np.abs(p2 - _gaussian(pv, ph, (0.1e-6, 0.2e-6)))) < 1e-12
    assert how.startswith("sampled on the P2 plane")


def _bad(tmp_path, *, data=None, attrs=None, drop=(), root=None):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "pxm-probe"
        for k, v in (root or {}).items():
            f.attrs[k] = v
        if data is not None:
            d = f.create_dataset("probe", data=data)
            for k, v in {"pixel_size_m": 10e-9, "axes": "p1, p2", **(attrs or {})}.items():
                if k not in drop:
                    d.attrs[k] = v
    return path


@pytest.mark.parametrize("case, match", [
    (dict(), "/probe: dataset missing"),
    (dict(data=np.ones((8, 8)), drop=("pixel_size_m",)), r"/probe@pixel_size_m: attribute missing"),
    (dict(data=np.ones(8)), r"/probe: 1D array"),
    (dict(data=np.ones((2, 2, 2, 2))), r"/probe: 4D array"),
    (dict(data=np.full((8, 8), np.nan)), "64 NaN/inf values"),
    (dict(data=np.zeros((8, 8))), "zero everywhere"),
    (dict(data=np.ones((8, 8)), attrs={"pixel_size_m": [1e-8, 2e-8, 3e-8]}), r"/probe@pixel_size_m: .*2 finite"),
    (dict(data=np.ones((8, 8)), attrs={"pixel_size_m": -1e-8}), r"/probe@pixel_size_m: .*> 0"),
    (dict(data=np.ones((8, 8)), attrs={"pixel_size_m": "ten nm"}), "is not a number"),
    (dict(data=np.ones((8, 8)), attrs={"axes": "x, y"}), "not a probe layout"),
    (dict(data=np.ones((8, 8)), attrs={"axes": "r1, r2, r3"}), "need 3D"),
    (dict(data=np.ones((8, 8)), attrs={"frame": "reconstruction"}), "/probe@frame"),
    (dict(data=np.ones((4, 4, 4)), drop=("axes",)), r"/probe@axes: attribute missing"),
    (dict(data=np.ones((4, 4, 4)), attrs={"axes": "p1, p2, p3"}), r"/probe@voxel_size_m: attribute missing"),
    (dict(data=np.ones((8, 8)), root={"format": "pxm-bragg-dataset"}), "format 'pxm-bragg-dataset'"),
])
def test_bad_files_are_named_in_one_line(tmp_path, case, match):
    path = _bad(tmp_path, **case)
    with pytest.raises(ValueError, match=match) as exc:
        read_probe_file(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg


def test_not_hdf5_and_missing_file(tmp_path):
    (tmp_path / "x.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        read_probe_file(tmp_path / "x.h5")
    with pytest.raises(ValueError, match="no such probe file"):
        read_probe_file(tmp_path / "none.h5")
    with pytest.raises(ValueError, match="voxel_size_m"):
        write_probe_file(tmp_path / "w.h5", np.ones((4, 4, 4)), axes="p1, p2, p3")
