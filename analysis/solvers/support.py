"""Tilted-slab thickness support and 3D shrink-wrap (seed Methods, spec 1.5, 2.3)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from analysis.geometry import BraggGeometry
from analysis.xp import array_module


def slab_normal(tilt_x_deg: float, tilt_y_deg: float) -> np.ndarray:
    """n̂ = R_y(tilt_y) R_x(tilt_x) ẑ in lab (x, y, z), right-handed rotations."""
    ax, ay = math.radians(tilt_x_deg), math.radians(tilt_y_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    return ry @ rx @ np.array([0.0, 0.0, 1.0])


def voxel_lab_coordinates_m(geometry: BraggGeometry, object_shape: tuple[int, int, int],
                            centre_vox: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lab (x, y, z) in metres of every object voxel, relative to ``centre_vox``; each (NO1, NO2, NO3)."""
    ax = geometry.lab_axes()
    e = np.stack([ax["e1"], ax["e2"], ax["e3"]])                     # rows e_a in lab
    dr = np.asarray(geometry.voxel_size_m)
    grids = [(np.arange(n) - c) * d for n, c, d in zip(object_shape, centre_vox, dr)]
    g1, g2, g3 = grids[0][:, None, None], grids[1][None, :, None], grids[2][None, None, :]
    return tuple(e[0, k] * g1 + e[1, k] * g2 + e[2, k] * g3 for k in range(3))  # type: ignore[return-value]


def slab_support(geometry: BraggGeometry, object_shape: tuple[int, int, int], centre_vox: np.ndarray,
                 thickness_m: float, tilt_x_deg: float = 5.5, tilt_y_deg: float = -2.0) -> np.ndarray:
    """S = [ |n̂·(r − r_c)| ≤ T/2 ]: bool (NO1, NO2, NO3) tilted-slab support on the recon grid.

    ``centre_vox`` is the object-grid point r_c on the slab mid-plane (e.g. the box centre
    at the central scan position).
    """
    if not thickness_m > 0:
        raise ValueError(f"slab_support: thickness_m must be > 0, got {thickness_m}")
    x, y, z = voxel_lab_coordinates_m(geometry, object_shape, np.asarray(centre_vox, float))
    n = slab_normal(tilt_x_deg, tilt_y_deg)
    return np.abs(n[0] * x + n[1] * y + n[2] * z) <= thickness_m / 2


def shrink_wrap(obj: Any, support: Any, threshold: float = 0.15) -> Any:
    """S ← S ∧ (|ρ| ≥ threshold · max|ρ|) (seed Methods); returns the new bool support."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"shrink_wrap: threshold must lie in [0, 1), got {threshold}")
    xp = array_module(obj)
    amp = xp.abs(obj)
    return support & (amp >= threshold * float(xp.max(amp * support)))
