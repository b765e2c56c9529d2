"""Tilted-slab thickness support and 3D shrink-wrap
(seed Methods, docs/geometry.md, Operators; docs/seed-schedule.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from analysis.geometry import BraggGeometry
from analysis.xp import Array, array_module, to_numpy


def slab_normal(tilt_x_deg: float, tilt_y_deg: float) -> np.ndarray:
    """n̂ = R_y(tilt_y) R_x(tilt_x) ẑ in lab (x, y, z), right-handed rotations."""
    ax, ay = math.radians(tilt_x_deg), math.radians(tilt_y_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    return ry @ rx @ np.array([0.0, 0.0, 1.0])


def slab_tilts_deg(normal: Any) -> tuple[float, float]:
    """(tilt_x_deg, tilt_y_deg) whose :func:`slab_normal` is the unit vector along ``normal`` (lab x, y, z).

    The sign of ``normal`` does not matter (a slab has two faces); it must not lie in the x–y plane.
    """
    n = np.asarray(normal, float)
    if n.shape != (3,) or not np.all(np.isfinite(n)) or not abs(n[2]) > 0:
        raise ValueError(f"slab normal {normal!r}: expected 3 finite numbers (x, y, z) with a non-zero z "
                         "component (the slab normal lies near Q = z)")
    n = n / np.linalg.norm(n) * (1.0 if n[2] > 0 else -1.0)
    return math.degrees(math.asin(-n[1])) + 0.0, math.degrees(math.atan2(n[0], n[2])) + 0.0   # no −0.0


def voxel_lab_coordinates_m(geometry: BraggGeometry, object_shape: tuple[int, int, int],
                            centre_vox: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lab (x, y, z) in metres of every object voxel, relative to ``centre_vox``; each (NO1, NO2, NO3)."""
    ax = geometry.lab_axes()
    e = np.stack([ax["e1"], ax["e2"], ax["e3"]])                     # rows e_a in lab
    dr = np.asarray(geometry.voxel_size_m)
    grids = [(np.arange(n) - c) * d for n, c, d in zip(object_shape, centre_vox, dr, strict=True)]
    g1, g2, g3 = grids[0][:, None, None], grids[1][None, :, None], grids[2][None, None, :]
    return tuple(e[0, k] * g1 + e[1, k] * g2 + e[2, k] * g3 for k in range(3))


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


def smoothed_amplitude(obj: Array, sigma_vox: float) -> Array:
    """|ρ| smoothed by a Gaussian of ``sigma_vox`` voxels (zero outside the grid), on ρ's backend.

    Shrink-wrap on the smoothed amplitude follows the crystal's envelope, not single-voxel noise.
    """
    from scipy.ndimage import gaussian_filter

    if not sigma_vox >= 0:
        raise ValueError(f"smoothed_amplitude: sigma_vox must be >= 0, got {sigma_vox}")
    xp = array_module(obj)
    amp = xp.abs(obj)
    if sigma_vox == 0:
        return amp
    host = gaussian_filter(np.asarray(to_numpy(amp), float), float(sigma_vox), mode="constant")
    return xp.asarray(host.astype(amp.dtype))


SHRINKWRAP_FLOOR_FRACTION = 0.25
"""Shrink-wrap keeps at least this fraction of the thickness (slab) support's voxels (see :func:`shrinkwrap_floor`)."""
SHRINKWRAP_FLOOR_MIN_VOXELS = 27
"""... and at least a 3 × 3 × 3 block: the fewest voxels with an interior voxel (the strain's central differences)."""


def shrinkwrap_floor(slab: Array, fraction: float = SHRINKWRAP_FLOOR_FRACTION) -> int:
    """Fewest voxels shrink-wrap may leave: max(27, ⌈``fraction`` · |slab|⌉), at most |slab|.

    Why ¼ of the slab: the thickness schedule ends on a slab about twice the film (seed: 0.9 µm slab,
    0.45 µm film), and a healthy shrink-wrap keeps about 60 % of it (docs/benchmarks.md: 69 171 →
    42 041 voxels). A support below a quarter of the slab would mean a film thinner than a quarter of
    the slab, which the schedule excludes; there the threshold follows a spike of |ρ| rather than the
    crystal's edge (a seed run ended at 176 voxels and its strain had no interior voxel).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"shrinkwrap_floor: fraction must lie in [0, 1], got {fraction}")
    n = int(array_module(slab).count_nonzero(slab))
    return min(n, max(SHRINKWRAP_FLOOR_MIN_VOXELS, int(math.ceil(fraction * n))))


def shrink_wrap(obj: Array, support: Array, threshold: float = 0.15, *, min_voxels: int = 1) -> Array:
    """S ← S ∧ (|ρ| ≥ t · max_S|ρ|) (seed Methods), t lowered where needed so S keeps ≥ ``min_voxels``.

    When the threshold would leave fewer than ``min_voxels`` voxels, the ``min_voxels`` largest |ρ| of S
    stay (ties may keep a few more); S is never emptied. Returns the new bool support.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"shrink_wrap: threshold must lie in [0, 1), got {threshold}")
    if min_voxels < 1:
        raise ValueError(f"shrink_wrap: min_voxels must be >= 1, got {min_voxels}")
    xp = array_module(obj)
    amp = xp.abs(obj)
    new = support & (amp >= threshold * float(xp.max(amp * support)))
    n_support = int(xp.count_nonzero(support))
    keep = min(min_voxels, n_support)
    if int(xp.count_nonzero(new)) >= keep:
        return new
    inside = xp.sort(amp[support])                       # ascending |ρ| of the voxels in S
    return support & (amp >= inside[n_support - keep])
