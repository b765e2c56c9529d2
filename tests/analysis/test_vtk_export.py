"""Results → VTK XML (ImageData with a direction matrix, StructuredGrid): values and voxel positions."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from analysis.bragg.operators.scan import object_placement
from analysis.dataset import write_results
from analysis.geometry import seed_geometry
from analysis.strain import StrainMaps
from analysis.vtk_export import export_results_vtk

GEOM = seed_geometry(n_rows_px=12, n_cols_px=10, n_angles=4, upsampling=3)
SHAPE = (5, 4, 3)


def _results(path: Path, *, placement: bool = True, sample_strain: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    obj = (rng.uniform(0.1, 1.0, SHAPE) * np.exp(1j * rng.uniform(-3, 3, SHAPE))).astype(np.complex64)
    support = rng.uniform(size=SHAPE) > 0.3
    eps = rng.normal(scale=1e-3, size=SHAPE)
    eps[0, 0, 0] = np.nan
    mask = np.isfinite(eps)
    pl = object_placement(GEOM, np.array([2.5, 1.0, 0.5]))
    maps = {"reconstruction": StrainMaps(eps_zz=eps, omega_x_rad=eps * 2, omega_y_rad=eps * 3,
                                         amplitude=np.abs(obj), mask=mask, voxel_size_m=GEOM.voxel_size_m,
                                         origin_m=(0.0, 0.0, 0.0), frame="reconstruction")}
    if sample_strain:
        z = np.zeros((2, 2, 2))
        maps["sample"] = StrainMaps(eps_zz=z, omega_x_rad=z, omega_y_rad=z, amplitude=z, mask=z > 0,
                                    voxel_size_m=(1e-8, 1e-8, 1e-8), origin_m=(0.0, 0.0, 0.0), frame="sample")
    write_results(path, object=obj, probe=np.ones((4, 3), complex), voxel_size_m=GEOM.voxel_size_m,
                  strain=maps, placement=pl if placement else None, support=support)
    idx = np.indices(SHAPE).reshape(3, -1).T
    return {"object": obj, "support": support, "eps": eps, "mask": mask,
            "points": pl.position_m(idx), "origin": pl.origin_m}


def _vtk_read(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(points (N, 3), point arrays (N,)) in VTK's point order (first index fastest), via VTK's readers."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOXML import vtkXMLImageDataReader, vtkXMLStructuredGridReader

    reader = vtkXMLImageDataReader() if path.suffix == ".vti" else vtkXMLStructuredGridReader()
    reader.SetFileName(str(path))
    reader.Update()
    out = reader.GetOutput()
    n = out.GetNumberOfPoints()
    pts = np.array([out.GetPoint(i) for i in range(n)])
    pd = out.GetPointData()
    arrays = {pd.GetArrayName(i): vtk_to_numpy(pd.GetArray(i)) for i in range(pd.GetNumberOfArrays())}
    return pts, arrays


def _xml_read(path: Path) -> tuple[np.ndarray | None, dict[str, np.ndarray], ET.Element]:
    """Without VTK: parse the XML header and the raw appended block (UInt64 sizes) ourselves."""
    raw = path.read_bytes()
    head, _, tail = raw.partition(b"<AppendedData")
    start = tail.index(b"_") + 1
    blob = tail[start:]
    root = ET.fromstring(head + b"</VTKFile>" if b"</VTKFile>" not in head else head)
    types = {"Float32": np.float32, "Float64": np.float64, "UInt8": np.uint8}
    order = "<" if root.get("byte_order") == "LittleEndian" else ">"
    arrays: dict[str, np.ndarray] = {}
    pts = None
    for da in root.iter("DataArray"):
        off = int(da.get("offset"))
        size = int(np.frombuffer(blob[off:off + 8], order + "u8")[0])
        a = np.frombuffer(blob[off + 8:off + 8 + size], np.dtype(types[da.get("type")]).newbyteorder(order))
        if da.get("Name") == "points":
            pts = a.reshape(-1, 3)
        else:
            arrays[da.get("Name")] = a
    return pts, arrays, root


def _c_to_vtk(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).ravel(order="F")


@pytest.mark.parametrize("suffix", [".vti", ".vts"])
def test_values_and_positions_read_back(tmp_path, suffix):
    truth = _results(tmp_path / "r.h5")
    out = export_results_vtk(tmp_path / "r.h5", tmp_path / f"o{suffix}")
    assert out.path.is_file() and out.shape == SHAPE
    assert set(out.arrays) == {"amplitude", "phase_rad", "support", "eps_zz", "omega_x_rad", "omega_y_rad",
                               "strain_mask"}
    obj = truth["object"]
    want_pts = truth["points"].reshape(SHAPE + (3,)).transpose(2, 1, 0, 3).reshape(-1, 3)   # first index fastest
    readers = [_xml_read]
    try:
        import vtkmodules.vtkIOXML  # noqa: F401

        readers.append(_vtk_read)
    except ImportError:
        pass
    for reader in readers:
        pts, arrays, *_ = reader(tmp_path / f"o{suffix}")
        if pts is not None:
            np.testing.assert_allclose(pts, want_pts, rtol=0, atol=1e-15)
        np.testing.assert_allclose(arrays["amplitude"], _c_to_vtk(np.abs(obj)), rtol=1e-6)
        np.testing.assert_allclose(arrays["phase_rad"], _c_to_vtk(np.angle(obj)), rtol=1e-6)
        np.testing.assert_array_equal(arrays["support"], _c_to_vtk(truth["support"]).astype(np.uint8))
        np.testing.assert_array_equal(arrays["strain_mask"], _c_to_vtk(truth["mask"]).astype(np.uint8))
        np.testing.assert_allclose(arrays["eps_zz"], _c_to_vtk(truth["eps"]).astype(np.float32), rtol=1e-6)
        assert np.isnan(arrays["eps_zz"][0])
    if suffix == ".vti":   # the XML carries the oblique placement itself: origin, spacing, direction
        _, _, root = _xml_read(tmp_path / "o.vti")
        img = root.find("ImageData")
        np.testing.assert_allclose([float(v) for v in img.get("Origin").split()], truth["origin"], rtol=1e-15)
        direction = np.array([float(v) for v in img.get("Direction").split()]).reshape(3, 3)
        e = np.stack([GEOM.lab_axes()[k] for k in ("e1", "e2", "e3")])
        np.testing.assert_allclose(direction, e.T, atol=1e-15)
        assert not np.allclose(direction, np.eye(3))      # the grid is rotated: an axis-aligned image would be wrong


def test_other_grids_are_skipped_with_a_line(tmp_path):
    _results(tmp_path / "r.h5", sample_strain=True)
    out = export_results_vtk(tmp_path / "r.h5", tmp_path / "o.vti")
    assert any(line.startswith("skipped /strain/sample: not on the object's grid") for line in out.skipped)
    assert "eps_zz" in out.arrays          # the native-grid maps keep their plain names


def test_bad_input_fails_with_one_line(tmp_path):
    _results(tmp_path / "r.h5", placement=False)
    with pytest.raises(ValueError, match=r"r\.h5: /object@origin_m: missing: the object has no placement"):
        export_results_vtk(tmp_path / "r.h5", tmp_path / "o.vti")
    with pytest.raises(ValueError, match="unknown VTK suffix '.vtk'"):
        export_results_vtk(tmp_path / "r.h5", tmp_path / "o.vtk")
    with pytest.raises(ValueError, match="no such file"):
        export_results_vtk(tmp_path / "none.h5", tmp_path / "o.vti")
