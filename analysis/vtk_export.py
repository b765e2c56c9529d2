"""Reconstruction results as VTK XML files for ParaView, placed in the sample frame.

:func:`export_results_vtk` reads a results file (``docs/dataset-format.md`` §2) and writes, as point
data on the object's voxels: ``amplitude`` (abs ρ), ``phase_rad`` (arg ρ), ``support`` (if the results
hold ``/support``) and the strain maps of the native grid (``eps_zz``, ``omega_x_rad``, ``omega_y_rad``,
``strain_mask``; NaN off the mask), with pyevtk.

Where the voxels sit: voxel n of the object is at ``origin_m + Σ_a n_a voxel_size_m[a] axes_lab[a]``
(the ``/object`` placement attributes), lab (x, y, z) in metres. The grid's axes e1, e2, e3 are oblique to
the lab axes (rotated by the Bragg angle about y), so an axis-aligned image cannot hold it. Two writers:

* ``.vti`` (VTK ImageData): ``Origin`` = ``origin_m``, ``Spacing`` = ``voxel_size_m`` and the
  ``Direction`` matrix (VTK ≥ 9 XML, ParaView ≥ 5.10) whose columns are e1, e2, e3 in lab coordinates,
  so point (i, j, k) is at ``Origin + Direction · (i Δ1, j Δ2, k Δ3)``. Compact; an older reader drops
  ``Direction`` and shows the grid unrotated.
* ``.vts`` (VTK StructuredGrid): every voxel's lab position written out; any VTK reader places it right,
  at the cost of three coordinates per voxel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyevtk.hl import gridToVTK
from pyevtk.vtk import VtkFile, VtkImageData

from analysis.dataset import open_for_reading

__all__ = ["VtkExport", "export_results_vtk", "VTK_SUFFIXES"]

VTK_SUFFIXES = (".vti", ".vts")
_STRAIN_FIELDS = (("eps_zz", "eps_zz"), ("omega_x_rad", "omega_x_rad"), ("omega_y_rad", "omega_y_rad"),
                  ("mask", "strain_mask"))


@dataclass(frozen=True, kw_only=True)
class VtkExport:
    """What :func:`export_results_vtk` wrote."""

    path: Path
    """The file written."""
    kind: str
    """``"ImageData"`` or ``"StructuredGrid"``."""
    shape: tuple[int, int, int]
    """Voxels along e1, e2, e3."""
    arrays: tuple[str, ...]
    """Point-data array names."""
    skipped: tuple[str, ...]
    """One line per results entry not written (and why)."""

    def lines(self) -> list[str]:
        """Printable summary."""
        n1, n2, n3 = self.shape
        return [f"wrote {self.path}: VTK {self.kind} {n1}×{n2}×{n3} in the sample frame (m), "
                f"point data {', '.join(self.arrays)}", *self.skipped]


def _fail(source: str, key: str, msg: str) -> ValueError:
    return ValueError(f"{source}: {key}: {msg}")


def _read(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(point arrays, origin_m, axes_lab, voxel_size_m, skipped lines) of a results file."""
    source = str(path)
    with open_for_reading(path) as f:
        if f.attrs.get("format") != "pxm-bragg-results":
            raise _fail(source, "/@format", f"{f.attrs.get('format')!r}, expected 'pxm-bragg-results' "
                        "(a file of pxm reconstruct)")
        if "object" not in f:
            raise _fail(source, "/object", "dataset missing")
        obj = f["object"]
        if obj.ndim != 3:
            raise _fail(source, "/object", f"shape {obj.shape}: VTK export needs the 3D object")
        for key in ("origin_m", "axes_lab", "voxel_size_m"):
            if key not in obj.attrs:
                raise _fail(source, f"/object@{key}", "missing: the object has no placement in the sample frame "
                            "(results written before placements were recorded); reconstruct again")
        origin = np.asarray(obj.attrs["origin_m"], float)
        axes = np.asarray(obj.attrs["axes_lab"], float)
        vox = np.asarray(obj.attrs["voxel_size_m"], float)
        if origin.shape != (3,) or axes.shape != (3, 3) or vox.shape != (3,):
            raise _fail(source, "/object@axes_lab", f"placement shapes {origin.shape}, {axes.shape}, {vox.shape}; "
                        "expected (3,), (3, 3), (3,)")
        if abs(np.linalg.det(axes)) < 1e-6 or not np.all(vox > 0):
            raise _fail(source, "/object@axes_lab", "axes are degenerate or voxel sizes not > 0")
        rho = np.asarray(obj[()])
        arrays: dict[str, np.ndarray] = {"amplitude": np.abs(rho).astype(np.float32),
                                         "phase_rad": np.angle(rho).astype(np.float32)}
        skipped: list[str] = []
        if "support" in f:
            sup = np.asarray(f["support"][()])
            if sup.shape == rho.shape:
                arrays["support"] = sup.astype(np.uint8)
            else:
                skipped.append(f"skipped /support: shape {sup.shape} != object {rho.shape}")
        else:
            skipped.append("no /support in the results: support not exported")
        if "strain" in f:
            native = [(n, g) for n, g in f["strain"].items()
                      if str(g.attrs.get("frame", "")) == "reconstruction" and g["eps_zz"].shape == rho.shape]
            for name, g in f["strain"].items():
                if all(name != n for n, _ in native):
                    skipped.append(f"skipped /strain/{name}: not on the object's grid (frame "
                                   f"{g.attrs.get('frame')!r}, shape {g['eps_zz'].shape}); export its own grid")
            for name, g in native:
                prefix = "" if len(native) == 1 else f"{name}_"
                for key, out in _STRAIN_FIELDS:
                    a = np.asarray(g[key][()])
                    arrays[prefix + out] = a.astype(np.uint8) if a.dtype == bool else a.astype(np.float32)
    return arrays, origin, axes, vox, skipped


def export_results_vtk(results_path: str | Path, out_path: str | Path) -> VtkExport:
    """Write the object (amplitude, phase), support and strain/tilt maps of a results file as VTK XML.

    Parameters
    ----------
    results_path : str or Path
        A results file of ``pxm reconstruct`` with the ``/object`` placement attributes.
    out_path : str or Path
        ``*.vti`` (ImageData with a direction matrix) or ``*.vts`` (StructuredGrid with every voxel's
        position); see the module docstring.

    Returns
    -------
    VtkExport
        What was written and what was left out.

    Raises
    ------
    ValueError
        One line naming the file and key (no placement, not a results file, wrong suffix).
    """
    src = Path(results_path)
    out = Path(out_path)
    if out.suffix not in VTK_SUFFIXES:
        raise ValueError(f"{out}: unknown VTK suffix {out.suffix!r}; use .vti (ImageData) or .vts (StructuredGrid)")
    arrays, origin, axes, vox, skipped = _read(src)
    shape = next(iter(arrays.values())).shape
    # pyevtk writes arrays in Fortran order (x index fastest): array axis a is VTK index a
    point_data: dict[str, Any] = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    stem = str(out.with_suffix(""))
    if out.suffix == ".vti":
        w = VtkFile(stem, VtkImageData)
        end = tuple(n - 1 for n in shape)
        w.openGrid(start=(0, 0, 0), end=end, origin=tuple(float(v) for v in origin),
                   spacing=tuple(float(v) for v in vox))
        # Direction (row-major 3×3): column a is the unit vector e_a in lab (x, y, z)
        w.xml.addAttributes(Direction=" ".join(repr(float(v)) for v in axes.T.reshape(-1)))
        w.openPiece(start=(0, 0, 0), end=end)
        w.openData("Point")
        for name, a in point_data.items():
            w.addData(name, a)
        w.closeData("Point")
        w.closePiece()
        w.closeGrid()
        for a in point_data.values():
            w.appendData(a)
        w.save()
        kind = "ImageData"
    else:
        idx = np.indices(shape, dtype=float).reshape(3, -1).T * vox
        xyz = (origin + idx @ axes).T.reshape((3,) + shape)
        gridToVTK(stem, *(np.ascontiguousarray(c) for c in xyz), pointData=point_data)
        kind = "StructuredGrid"
    return VtkExport(path=out, kind=kind, shape=(int(shape[0]), int(shape[1]), int(shape[2])),
                     arrays=tuple(point_data), skipped=tuple(skipped))
