"""Stage positions → integer view offsets o_j and sub-pixel probe shifts g_j (docs/geometry.md, Operators)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import numpy as np

from analysis.bragg.operators.probe import extrusion_slope_px
from analysis.geometry import BraggGeometry


@dataclass(frozen=True, kw_only=True)
class ViewGrid:
    """Where each scan position's box sits in the object array."""

    offsets_vox: np.ndarray = field(repr=False)
    """(POS, 3) int64: box origin o_j in the object grid (voxels along e1, e2, e3)."""
    shifts_px: np.ndarray = field(repr=False)
    """(POS, 2) float64: sub-pixel P2 shift g_j along (r2, r3), pixels."""
    object_shape: tuple[int, int, int]
    """(NO1, NO2, NO3) object grid holding every box."""
    origin_vox: np.ndarray = field(repr=False)
    """(3,) float64: object-grid coordinates of the probe centre at zero stage position."""


@dataclass(frozen=True, kw_only=True)
class ObjectPlacement:
    """Where each voxel of the object array sits in the sample frame (docs/geometry.md, Operators).

    Voxel n = (n1, n2, n3) is at r(n) = ``origin_m`` + Σ_a n_a ``voxel_size_m``[a] e_a, in lab (x, y, z)
    metres relative to the sample point that sits in the beam (the probe centre) at stage position 0;
    a stage translation s brings the sample point r = −s into the beam.
    """

    origin_m: np.ndarray = field(repr=False)
    """(3,) float64: lab (x, y, z) of voxel [0, 0, 0], metres."""
    axes_lab: np.ndarray = field(repr=False)
    """(3, 3) float64: rows e1, e2, e3 (unit vectors of the array axes) in lab (x, y, z)."""
    voxel_size_m: tuple[float, float, float]
    """(Δr1, Δr2, Δr3) along e1, e2, e3, metres."""

    def position_m(self, index_vox: np.ndarray) -> np.ndarray:
        """Lab (x, y, z) in metres of (fractional) voxel indices ``(..., 3)``; returns ``(..., 3)``."""
        n = np.asarray(index_vox, float) * np.asarray(self.voxel_size_m)
        return self.origin_m + n @ self.axes_lab

    def index_vox(self, position_m: np.ndarray) -> np.ndarray:
        """Fractional voxel indices ``(..., 3)`` of lab points ``(..., 3)`` in metres (inverse of
        :meth:`position_m`; the axes are orthonormal).
        """
        d = np.asarray(position_m, float) - self.origin_m
        return (d @ self.axes_lab.T) / np.asarray(self.voxel_size_m)

    def as_dict(self) -> dict[str, list]:
        """``origin_m``, ``axes_lab`` and ``voxel_size_m`` as plain lists (metadata, JSON)."""
        return {"origin_m": [float(v) for v in self.origin_m],
                "axes_lab": [[float(v) for v in row] for row in self.axes_lab],
                "voxel_size_m": [float(v) for v in self.voxel_size_m]}


def object_placement(geometry: BraggGeometry, origin_vox: np.ndarray) -> ObjectPlacement:
    """Placement of an object grid whose probe centre at zero stage position is at ``origin_vox``
    (:attr:`ViewGrid.origin_vox`): voxel n sits at Σ_a (n_a − origin_a) Δr_a e_a.
    """
    o = np.asarray(origin_vox, float)
    if o.shape != (3,) or not np.all(np.isfinite(o)):
        raise ValueError(f"origin_vox: shape {o.shape}, expected (3,) finite voxel coordinates")
    ax = geometry.lab_axes()
    e = np.stack([ax["e1"], ax["e2"], ax["e3"]])
    vox = tuple(float(v) for v in geometry.voxel_size_m)
    return ObjectPlacement(origin_m=-(o * np.asarray(vox)) @ e, axes_lab=e, voxel_size_m=vox)  # type: ignore[arg-type]


def positions_to_voxels(geometry: BraggGeometry, stage_xyz_m: np.ndarray) -> np.ndarray:
    """ν_j = (e_a·r_j / Δr_a)_a with r_j = −s_j: probe position in voxels, (POS, 3) float64."""
    s = np.asarray(stage_xyz_m, dtype=float)
    if s.ndim != 2 or s.shape[1] != 3:
        raise ValueError(f"stage_xyz_m: shape {s.shape}, expected (n_positions, 3) in metres")
    ax = geometry.lab_axes()
    e = np.stack([ax["e1"], ax["e2"], ax["e3"]])          # (3, 3) rows e_a in lab (x, y, z)
    return (-s @ e.T) / np.asarray(geometry.voxel_size_m)[None, :]


def split_probe_position(nu_vox: np.ndarray, slope_px: tuple[float, float],
                         box_centre_vox: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split probe-centre object coordinates into box offsets o_j and 2D shifts g_j.

    The box origin o_j = round(ν_j − c_box); the fraction f = (f1, f2, f3) is moved along
    k_i to cancel f1, leaving g = (f2, f3) − f1·d (P is invariant along k_i).
    """
    frac_target = np.asarray(nu_vox, float) - np.asarray(box_centre_vox, float)[None, :]
    o = np.rint(frac_target).astype(np.int64)
    f = frac_target - o
    d = np.asarray(slope_px, float)
    g = f[:, 1:] - f[:, :1] * d[None, :]
    return o, g


def view_grid(geometry: BraggGeometry, stage_xyz_m: np.ndarray, margin_vox: int = 0,
              object_shape: tuple[int, int, int] | None = None,
              origin_vox: np.ndarray | None = None) -> ViewGrid:
    """Offsets and shifts for every position; size the object grid unless ``object_shape`` is given.

    Raises ValueError when a box leaves a given ``object_shape``.
    """
    box = np.asarray(geometry.recon_shape)
    nu = positions_to_voxels(geometry, stage_xyz_m)
    c_box = box // 2
    if origin_vox is None:
        origin_vox = c_box + margin_vox - np.floor(nu.min(axis=0))
    origin_vox = np.asarray(origin_vox, float)
    o, g = split_probe_position(nu + origin_vox[None, :], extrusion_slope_px(geometry), c_box)
    need = tuple(int(v) for v in (o.max(axis=0) + box))
    if object_shape is None:
        object_shape = cast("tuple[int, int, int]", tuple(int(v) + margin_vox for v in need))
    object_shape = cast("tuple[int, int, int]", tuple(int(v) for v in object_shape))
    bad = np.nonzero(np.any(o < 0, axis=1) | np.any(o + box[None, :] > np.asarray(object_shape)[None, :], axis=1))[0]
    if bad.size:
        raise ValueError(
            f"scan positions {bad[:10].tolist()} put the {tuple(box)} view box outside the object grid "
            f"{object_shape} (offsets {o[bad[0]].tolist()}); enlarge object_shape or drop those positions"
        )
    return ViewGrid(offsets_vox=o, shifts_px=g, object_shape=object_shape, origin_vox=origin_vox)
