"""Reconstruction-frame volumes resampled onto sample-frame planes for figures (docs/geometry.md).

The reconstruction grid has orthonormal axes e1, e2, e3 (``analysis.geometry``); a foil whose normal
is z ∥ Q is a tilted band there. :func:`resample_to_sample_frame` interpolates a volume (real or
complex) onto points of the sample frame (x along the surface in the scattering plane, y the rocking
axis, z ∥ Q), so the foil lies flat. Voxel n of the volume sits at lab position
r(n) = ``origin_m`` + Σ_a n_a Δr_a e_a; without an origin the grid centre (voxel N//2) is at r = 0,
the convention of :func:`analysis.strain.map_to_sample_frame`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from analysis.xp import Array

__all__ = ["SampleFrame", "sample_frame", "resample_to_sample_frame", "SamplePlane", "sample_planes"]


@dataclass(frozen=True, kw_only=True)
class SampleFrame:
    """Where the voxels of a reconstruction-frame volume sit in the sample frame."""

    shape: tuple[int, int, int]
    """Shape of the volume (N1, N2, N3)."""
    voxel_size_m: tuple[float, float, float]
    """(Δr1, Δr2, Δr3) along e1, e2, e3, metres."""
    axes_lab: np.ndarray = field(repr=False)
    """(3, 3): rows e1, e2, e3 in sample (x, y, z)."""
    origin_m: np.ndarray = field(repr=False)
    """(3,): sample (x, y, z) of voxel [0, 0, 0], metres."""

    def index_vox(self, points_m: np.ndarray) -> np.ndarray:
        """Fractional voxel indices (3, ...) of sample points ``(..., 3)`` in metres."""
        d = np.asarray(points_m, float) - self.origin_m
        n = (d @ self.axes_lab.T) / np.asarray(self.voxel_size_m)
        return np.moveaxis(n, -1, 0)

    def position_m(self, index_vox: np.ndarray) -> np.ndarray:
        """Sample (x, y, z) in metres ``(..., 3)`` of voxel indices ``(..., 3)``."""
        n = np.asarray(index_vox, float) * np.asarray(self.voxel_size_m)
        return self.origin_m + n @ self.axes_lab

    def bounds_m(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) corners (3,) of the box in the sample frame that holds the whole volume."""
        corners = np.array([[i, j, k] for i in (0, self.shape[0] - 1) for j in (0, self.shape[1] - 1)
                            for k in (0, self.shape[2] - 1)], float)
        pos = self.position_m(corners)
        return pos.min(axis=0), pos.max(axis=0)


def sample_frame(shape: tuple[int, ...], voxel_size_m: Any, *, theta_bragg_rad: float | None = None,
                 axes_lab: Any = None, origin_m: Any = None, geometry: Any = None) -> SampleFrame:
    """The :class:`SampleFrame` of a volume from θ_B (symmetric reflection), a geometry or explicit axes.

    Parameters
    ----------
    shape
        Volume shape (N1, N2, N3).
    voxel_size_m
        (Δr1, Δr2, Δr3) in metres.
    theta_bragg_rad
        Bragg angle: e1 = (sinθ, 0, −cosθ), e2 = ŷ, e3 = (cosθ, 0, sinθ). Ignored when ``axes_lab`` is given.
    axes_lab
        (3, 3) rows e1, e2, e3 in sample (x, y, z) (e.g. ``ObjectPlacement.axes_lab``).
    origin_m
        Sample position of voxel [0, 0, 0]; default: the grid centre (voxel N//2) at 0.
    geometry
        A :class:`analysis.geometry.BraggGeometry`: e1, e2, e3 from its ``lab_axes()``, so a general
        diffractometer geometry (``geometry.frame``) is placed in its own sample frame. Ignored when
        ``axes_lab`` is given; takes precedence over ``theta_bragg_rad``.

    Returns
    -------
    SampleFrame
    """
    if len(shape) != 3:
        raise ValueError(f"sample_frame: expected a 3D volume, found shape {tuple(shape)}")
    vox = tuple(float(v) for v in np.broadcast_to(np.asarray(voxel_size_m, float), (3,)))
    if not all(math.isfinite(v) and v > 0 for v in vox):
        raise ValueError(f"sample_frame: voxel_size_m must be 3 finite sizes > 0, got {vox}")
    if axes_lab is None and geometry is not None:
        ax = geometry.lab_axes()
        axes_lab = np.stack([ax["e1"], ax["e2"], ax["e3"]])
    if axes_lab is None:
        if theta_bragg_rad is None:
            raise ValueError("sample_frame: give theta_bragg_rad, geometry or axes_lab")
        s, c = math.sin(theta_bragg_rad), math.cos(theta_bragg_rad)
        axes = np.array([[s, 0.0, -c], [0.0, 1.0, 0.0], [c, 0.0, s]])
    else:
        axes = np.asarray(axes_lab, float)
        if axes.shape != (3, 3) or not np.allclose(axes @ axes.T, np.eye(3), atol=1e-6):
            raise ValueError("sample_frame: axes_lab must be 3 orthonormal rows e1, e2, e3")
    n = tuple(int(v) for v in shape)
    if origin_m is None:
        origin = -(np.array([v // 2 for v in n], float) * np.asarray(vox)) @ axes
    else:
        origin = np.asarray(origin_m, float).reshape(3)
    return SampleFrame(shape=(n[0], n[1], n[2]), voxel_size_m=(vox[0], vox[1], vox[2]), axes_lab=axes,
                       origin_m=origin)


def resample_to_sample_frame(volume: Array, frame: SampleFrame, x_m: Any, y_m: Any, z_m: Any, *,
                             order: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``volume`` on the sample-frame grid x × y × z (indexed [x, y, z]) and where it is covered.

    Parameters
    ----------
    volume
        (N1, N2, N3) real or complex array on the reconstruction grid of ``frame``.
    frame
        Its placement (:func:`sample_frame`).
    x_m, y_m, z_m
        1D sample coordinates in metres (a single value gives a plane).
    order
        Spline order of ``scipy.ndimage.map_coordinates`` (1: trilinear; complex values are interpolated
        as real and imaginary parts, never as wrapped phase).

    Returns
    -------
    values : numpy.ndarray
        Shape (len(x), len(y), len(z)); NaN (real) or NaN+NaN·j (complex) outside the volume.
    covered : numpy.ndarray
        Bool, True where the point lies inside the reconstruction grid.
    """
    from analysis.xp import to_numpy

    v = np.asarray(to_numpy(volume))
    if v.shape != frame.shape:
        raise ValueError(f"resample_to_sample_frame: volume shape {v.shape} differs from the frame's {frame.shape}")
    X, Y, Z = np.meshgrid(np.atleast_1d(np.asarray(x_m, float)), np.atleast_1d(np.asarray(y_m, float)),
                          np.atleast_1d(np.asarray(z_m, float)), indexing="ij")
    coords = frame.index_vox(np.stack([X, Y, Z], axis=-1))
    hi = np.asarray(frame.shape, float)[:, None, None, None] - 1
    covered = np.all((coords >= -1e-9) & (coords <= hi + 1e-9), axis=0)

    def interp(a: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(a.astype(float), coords, order=order, mode="nearest")

    if np.iscomplexobj(v):
        out: np.ndarray = interp(v.real) + 1j * interp(v.imag)
        out[~covered] = complex(np.nan, np.nan)
    else:
        out = interp(v)
        out[~covered] = np.nan
    return out, covered


@dataclass(frozen=True, kw_only=True)
class SamplePlane:
    """One sample-frame plane of a volume, ready for ``imshow(values, origin="lower", extent=extent_um)``."""

    name: str
    """``"x–z"``, ``"x–y"`` or ``"y–z"`` plus where it cuts, e.g. ``"x–z at y = 0.12 µm"``."""
    values: np.ndarray = field(repr=False)
    """(rows, cols): rows along the vertical axis (z, or y for x–y), cols along the horizontal one."""
    extent_um: tuple[float, float, float, float]
    """(h0, h1, v0, v1) in µm."""
    labels: tuple[str, str]
    """(horizontal, vertical) axis labels with units."""


def sample_planes(volume: Array, frame: SampleFrame, *, centre_m: Any = None, step_m: float | None = None,
                  max_px: int = 400) -> list[SamplePlane]:
    """The x–z, x–y and y–z planes of ``volume`` in the sample frame through ``centre_m``.

    Parameters
    ----------
    volume
        (N1, N2, N3) real or complex array.
    frame
        Its placement.
    centre_m
        Sample (x, y, z) the planes pass through; default the centre of the volume's box.
    step_m
        Pixel size of the planes; default the smallest voxel size (coarser if a plane would exceed ``max_px``).
    max_px
        Largest plane side in pixels.

    Returns
    -------
    list of SamplePlane
    """
    lo, hi = frame.bounds_m()
    step = float(step_m) if step_m is not None else min(frame.voxel_size_m)
    step = max(step, float(np.max(hi - lo)) / max(max_px - 1, 1))
    c = (lo + hi) / 2 if centre_m is None else np.asarray(centre_m, float).reshape(3)
    axes = [lo[i] + step * np.arange(int(math.floor((hi[i] - lo[i]) / step)) + 1) for i in range(3)]
    names = ("x", "y", "z")
    out = []
    for h, vert, cut in ((0, 2, 1), (0, 1, 2), (1, 2, 0)):
        grid: list[Any] = [None, None, None]
        grid[h], grid[vert], grid[cut] = axes[h], axes[vert], np.array([c[cut]])
        vals, _ = resample_to_sample_frame(volume, frame, grid[0], grid[1], grid[2])
        plane = np.squeeze(vals, axis=cut)                  # remaining axes in (h, v) order since h < v
        ext = (float(axes[h][0] - step / 2) * 1e6, float(axes[h][-1] + step / 2) * 1e6,
               float(axes[vert][0] - step / 2) * 1e6, float(axes[vert][-1] + step / 2) * 1e6)
        out.append(SamplePlane(name=f"{names[h]}–{names[vert]} at {names[cut]} = {c[cut] * 1e6:.3g} µm",
                               values=plane.T, extent_um=ext,
                               labels=(f"{names[h]} (µm)", f"{names[vert]} (µm)")))
    return out
