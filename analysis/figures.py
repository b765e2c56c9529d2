"""PNG figures of reconstructions for a logbook: object, strain, probe and convergence (matplotlib Agg).

Complex fields are shown with hue = phase and value = amplitude (HSV colouring) beside a colour-wheel
legend; every colour bar names its quantity and unit; every figure carries a footer with the run uid,
recipe, date and pxm version (:mod:`analysis.figure_style`). Given the Bragg angle (or the object's
placement), object and strain are also shown in the sample frame (x along the surface, z ∥ Q, in µm;
:mod:`analysis.figure_frames`) next to the reconstruction frame (e1, e2, e3). Each ``build_*`` function
returns the open Matplotlib figure (for inspection); each ``save_*`` function writes one PNG and returns
its path; nothing is shown on screen.
"""

# Why this module is long: one figure per function (object, strain, probe, convergence) over the same colouring and
# sample-frame helpers; splitting would only move those shared helpers around.

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.figure_frames import SampleFrame, sample_planes  # noqa: E402
from analysis.figure_style import (  # noqa: E402
    FigureFooter,
    add_phase_wheel,
    complex_to_rgb,
    finish_figure,
    labelled_colorbar,
)
from analysis.strain import StrainMaps, map_to_sample_frame  # noqa: E402
from analysis.xp import Array, to_numpy  # noqa: E402

__all__ = ["complex_to_rgb", "robust_limit", "build_object_figure", "save_object_slices", "build_strain_figure",
           "save_strain_slices", "restrict_maps", "DepthProfile", "strain_depth_profile", "build_probe_figure",
           "save_probe", "build_convergence_figure", "save_convergence",
           "support_events", "build_map_figure", "save_map_figure", "save_error_history"]


def _slice_centre(weights: np.ndarray) -> list[int]:
    """Voxel index of the centre of mass of ``weights`` ≥ 0 (the array centre if they are all 0)."""
    w = np.where(np.isfinite(weights), weights, 0.0)
    total = float(w.sum())
    if total <= 0:
        return [n // 2 for n in w.shape]
    idx = np.indices(w.shape).reshape(w.ndim, -1)
    return [int(round(float(i @ w.ravel()) / total)) for i in idx]


def _centre_slices(a: np.ndarray, centre: list[int] | None = None, voxel_size_m: Any = None, *,
                   axis_names: Sequence[str] = ("e1", "e2", "e3"),
                   first_horizontal: bool = False) -> list[tuple[str, np.ndarray, list[float] | None, tuple[str, str]]]:
    """(name, 2D slice, imshow extent in µm or None, (x label, y label)) for the three central planes.

    The planes pass through ``centre`` (default: the array centre), so a thin tilted crystal is cut
    where it is, not where the array's middle happens to be. By default the later remaining axis runs
    horizontally; ``first_horizontal`` puts the earlier one there (x across, z up in the sample frame).
    """
    unit = " (µm)" if voxel_size_m is not None else " (pixels)"
    if a.ndim == 2:
        return [("", a, _extent_um(a.shape, voxel_size_m), (f"{axis_names[1]}{unit}", f"{axis_names[0]}{unit}"))]
    if a.ndim != 3:
        raise ValueError(f"figures: expected a 2D or 3D array, found shape {a.shape}")
    c = centre if centre is not None else [n // 2 for n in a.shape]
    vox = None if voxel_size_m is None else np.broadcast_to(np.asarray(voxel_size_m, float), (3,))
    out = []
    for axis in range(3):
        rest = [k for k in range(3) if k != axis]
        s = np.take(a, c[axis], axis=axis)
        if first_horizontal:
            s, rest = s.T, rest[::-1]
        ext = None if vox is None else _extent_um(s.shape, (vox[rest[0]], vox[rest[1]]))
        out.append((f"{axis_names[axis]}={c[axis]}", s, ext,
                    (f"{axis_names[rest[1]]}{unit}", f"{axis_names[rest[0]]}{unit}")))
    return out


def _extent_um(shape: tuple[int, ...], voxel_size_m: Any) -> list[float] | None:
    """imshow extent [0, cols·d1, 0, rows·d0] in µm, or None without voxel sizes."""
    if voxel_size_m is None:
        return None
    d = np.broadcast_to(np.asarray(voxel_size_m, float), (2,))
    return [0.0, shape[1] * d[1] * 1e6, 0.0, shape[0] * d[0] * 1e6]


def _show(ax: Any, img: Array, extent: list[float] | None, labels: tuple[str, str], **kw: Any) -> Any:
    """imshow at equal aspect with physical extent when known, voxel indices otherwise."""
    im = ax.imshow(img, origin="lower", extent=extent, aspect="equal", **kw)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    return im


def robust_limit(values: Array, percentile: float = 99.0) -> float:
    """Symmetric colour limit: the ``percentile`` of |values| over finite entries (1.0 if none).

    Dislocation cores and support edges give a few extreme strain/tilt voxels; a max-based limit
    would wash out the rest of the map.
    """
    v = np.abs(np.asarray(values, float))
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 1.0
    lim = float(np.percentile(v, percentile))
    return lim if lim > 0 else (float(v.max()) or 1.0)


def _shift_extent(ext: list[float] | None, origin_um: tuple[float, float]) -> list[float] | None:
    """``ext`` moved by (horizontal, vertical) origin offsets in µm."""
    if ext is None:
        return None
    return [ext[0] + origin_um[0], ext[1] + origin_um[0], ext[2] + origin_um[1], ext[3] + origin_um[1]]


def _complex_panel(fig: Figure, ax: Any, z: np.ndarray, extent: Any, labels: tuple[str, str], *,
                   amplitude_max: float, phase_threshold: float, wheel: bool) -> None:
    """Complex image (hue = phase, value = amplitude), black where |z| < threshold or undefined."""
    z = np.nan_to_num(np.asarray(z, complex), nan=0.0)
    z = np.where(np.abs(z) < phase_threshold * amplitude_max, 0, z)
    _show(ax, complex_to_rgb(z, amplitude_max=amplitude_max), extent, labels)
    if wheel:
        add_phase_wheel(fig, ax)


def build_object_figure(rho: Array, *, title: str = "object", voxel_size_m: Any = None,
                        frame: SampleFrame | None = None, phase_threshold: float = 0.1,
                        amplitude_unit: str = "arb. units") -> Figure:
    """Slices of ρ through the centre of mass of |ρ|²: |ρ| and phase, reconstruction and sample frames.

    Parameters
    ----------
    rho
        2D or 3D complex object on the reconstruction grid (e1, e2, e3).
    title
        Figure title.
    voxel_size_m
        Voxel sizes (axes in µm at equal aspect); None: voxel indices.
    frame
        Placement of a 3D ``rho`` in the sample frame (:func:`analysis.figure_frames.sample_frame`): adds
        the x–z, x–y and y–z planes resampled there (x along the surface, z ∥ Q).
    phase_threshold
        The phase is blanked (black) where |ρ| < this fraction of max|ρ| (it has no meaning there).
    amplitude_unit
        Unit of |ρ| on its colour bar.

    Returns
    -------
    matplotlib.figure.Figure
        Rows |ρ| and phase (hue, with a colour wheel) per frame.
    """
    a = np.asarray(to_numpy(rho))
    amp = np.abs(a)
    centre = _slice_centre(amp ** 2) if a.ndim == 3 else None
    sl = _centre_slices(a, centre, voxel_size_m)
    amp_max = float(amp.max()) if amp.size else 0.0
    amp_max = amp_max or 1.0
    planes = []
    if frame is not None and a.ndim == 3 and centre is not None:
        planes = sample_planes(a, frame, centre_m=frame.position_m(np.asarray(centre, float)))
    n_rows = 2 + (2 if planes else 0)
    fig, axes = plt.subplots(n_rows, len(sl), figsize=(4.2 * len(sl), 3.4 * n_rows + 0.4), squeeze=False)
    for j, (name, s, ext, labels) in enumerate(sl):
        im = _show(axes[0, j], np.abs(s), ext, labels, cmap="gray", vmin=0.0, vmax=amp_max)
        axes[0, j].set_title(f"reconstruction frame: |ρ| {name}", fontsize=9)
        labelled_colorbar(fig, im, axes[0, j], f"|ρ| ({amplitude_unit})")
        _complex_panel(fig, axes[1, j], s, ext, labels, amplitude_max=amp_max, phase_threshold=phase_threshold,
                       wheel=j == 0)
        axes[1, j].set_title(f"reconstruction frame: phase {name}", fontsize=9)
    for j, pl in enumerate(planes):
        ext_p = list(pl.extent_um)
        am = np.ma.masked_invalid(np.abs(pl.values))
        im = _show(axes[2, j], am, ext_p, pl.labels, cmap="gray", vmin=0.0, vmax=amp_max)
        axes[2, j].set_title(f"sample frame: |ρ| {pl.name}", fontsize=9)
        labelled_colorbar(fig, im, axes[2, j], f"|ρ| ({amplitude_unit})")
        _complex_panel(fig, axes[3, j], pl.values, ext_p, pl.labels, amplitude_max=amp_max,
                       phase_threshold=phase_threshold, wheel=j == 0)
        axes[3, j].set_title(f"sample frame: phase {pl.name}", fontsize=9)
    fig.suptitle(f"{title}: |ρ| and phase (hue, black below {phase_threshold:.0%} of max|ρ|)"
                 + ("; sample frame: x along the surface, z ∥ Q" if planes else ""))
    return fig


def save_object_slices(path: str | Path, rho: Array, *, title: str = "object", axis_labels: str = "e1,e2,e3",
                       phase_threshold: float = 0.1, voxel_size_m: Any = None, frame: SampleFrame | None = None,
                       footer: FigureFooter | None = None, amplitude_unit: str = "arb. units") -> Path:
    """Write :func:`build_object_figure` as PNG (``axis_labels`` is kept for callers; the axes are named).

    Returns
    -------
    Path
        ``path``.
    """
    del axis_labels
    fig = build_object_figure(rho, title=title, voxel_size_m=voxel_size_m, frame=frame,
                              phase_threshold=phase_threshold, amplitude_unit=amplitude_unit)
    return _save(fig, path, footer)


def _save(fig: Figure, path: str | Path, footer: FigureFooter | None) -> Path:
    try:
        out = finish_figure(fig, path, footer)
    finally:
        plt.close(fig)
    assert out is not None
    return out


_STRAIN_FIELDS = (("ε_zz", "ε_zz (×10⁻⁴, dimensionless)", "eps_zz", 1e4),
                  ("ω_x", "ω_x (µrad)", "omega_x_rad", 1e6), ("ω_y", "ω_y (µrad)", "omega_y_rad", 1e6))


def _crop_to_finite(s: np.ndarray, ext: list[float] | None, margin_px: int = 2
                    ) -> tuple[np.ndarray, list[float] | None]:
    """``s`` and its imshow extent cut to the rows and columns holding finite values (± ``margin_px``).

    A thin foil mapped in a box many times its thickness would otherwise be a line across an empty panel.
    """
    fin = np.isfinite(s)
    if ext is None or s.ndim != 2 or not fin.any():
        return s, ext
    rows, cols = np.flatnonzero(fin.any(axis=1)), np.flatnonzero(fin.any(axis=0))
    r0, r1 = max(0, int(rows[0]) - margin_px), min(s.shape[0], int(rows[-1]) + 1 + margin_px)
    c0, c1 = max(0, int(cols[0]) - margin_px), min(s.shape[1], int(cols[-1]) + 1 + margin_px)
    dx, dy = (ext[1] - ext[0]) / s.shape[1], (ext[3] - ext[2]) / s.shape[0]
    return s[r0:r1, c0:c1], [ext[0] + c0 * dx, ext[0] + c1 * dx, ext[2] + r0 * dy, ext[2] + r1 * dy]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DepthProfile:
    """ε_zz against the height above the foil's mid-plane, averaged over the mapped area (sample frame)."""

    height_m: np.ndarray
    """Bin centres: z − z_mid(x, y), metres (z_mid: half-way between the column's lowest and highest mapped voxel)."""
    mean: np.ndarray
    """Mean ε_zz per bin (NaN where empty)."""
    spread: np.ndarray
    """Standard deviation of ε_zz per bin."""
    count: np.ndarray
    """Voxels per bin."""


def strain_depth_profile(sample_maps: StrainMaps, *, min_column_voxels: int = 3) -> DepthProfile:
    """ε_zz of sample-frame maps binned by height above the foil's local mid-plane (one bin per z voxel).

    Each (x, y) column's mid-plane is half-way between its lowest and highest mapped (finite) voxel, so a tilted
    foil is followed column by column; layers parallel to the surfaces (implanted, FIB-damaged) show as steps of
    the profile near ±thickness/2, which no single slice of a tilted foil shows.

    Parameters
    ----------
    sample_maps
        Maps in the sample frame (:func:`analysis.strain.map_to_sample_frame`; axes x, y, z, z ∥ Q).
    min_column_voxels
        Columns with fewer mapped voxels are left out (a foil's edge, a masked core).

    Returns
    -------
    DepthProfile
        Empty arrays when nothing is mapped.
    """
    if sample_maps.frame != "sample":
        raise ValueError(f"strain_depth_profile: maps in the {sample_maps.frame!r} frame; map them to the sample "
                         "frame first (analysis.strain.map_to_sample_frame)")
    eps = np.asarray(to_numpy(sample_maps.eps_zz), float)
    if eps.ndim != 3:
        raise ValueError(f"strain_depth_profile: expected 3D maps, found shape {eps.shape}")
    dz = float(sample_maps.voxel_size_m[2])
    fin = np.isfinite(eps)
    k = np.arange(eps.shape[2], dtype=float)[None, None, :]
    keep = fin.sum(axis=2) >= min_column_voxels
    lo = np.where(fin, k, k.size).min(axis=2)
    hi = np.where(fin, k, -1.0).max(axis=2)
    mid = np.where(keep, (lo + hi) / 2, np.nan)
    h = (k - mid[:, :, None])                                 # height in voxels, half-integers or integers
    sel = fin & keep[:, :, None]
    hv, ev = np.round(h[sel] * 2) / 2, eps[sel]
    if hv.size == 0:
        e = np.zeros(0)
        return DepthProfile(height_m=e, mean=e, spread=e, count=np.zeros(0, int))
    bins = np.unique(hv)
    idx = np.searchsorted(bins, hv)
    count = np.bincount(idx, minlength=bins.size)
    mean = np.bincount(idx, ev, minlength=bins.size) / count
    var = np.bincount(idx, ev ** 2, minlength=bins.size) / count - mean ** 2
    return DepthProfile(height_m=bins * dz, mean=mean, spread=np.sqrt(np.maximum(var, 0.0)), count=count)


def _draw_depth_profile(ax: Any, prof: DepthProfile, *, region_note: str) -> None:
    """The profile as ε_zz (×10⁻⁴) across, height (nm) up, mean ± spread; bins of fewer than 5 voxels faint."""
    ok = prof.count >= 5
    h_nm, m, sd = prof.height_m * 1e9, prof.mean * 1e4, prof.spread * 1e4
    ax.fill_betweenx(h_nm[ok], (m - sd)[ok], (m + sd)[ok], color="C3", alpha=0.2, lw=0, label="± spread")
    ax.plot(m[ok], h_nm[ok], "o-", color="C3", ms=3, label="mean ε_zz")
    if (~ok).any():
        ax.plot(m[~ok], h_nm[~ok], "o", color="C3", ms=2, alpha=0.3)
    ax.axvline(0, color="0.6", lw=0.8)
    ax.set_xlabel("ε_zz (×10⁻⁴, dimensionless)")
    ax.set_ylabel("height above the foil's mid-plane (nm)")
    ax.set_title(f"depth profile of ε_zz, sample frame ({region_note}; layers ∥ the surfaces show as steps)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower right")


def build_strain_figure(maps: StrainMaps, *, sample_maps: StrainMaps | None = None, title: str = "strain",
                        region_note: str = "every mapped voxel") -> Figure:
    """Slices of ε_zz (×10⁻⁴), ω_x and ω_y (µrad) through the mapped crystal's centre; masked voxels blank.

    Parameters
    ----------
    maps
        Maps on the reconstruction grid (or any one frame).
    sample_maps
        The same maps in the sample frame (:func:`analysis.strain.map_to_sample_frame`), shown below with
        x across and z up, in µm from the reconstruction's centre, and their depth profile
        (:func:`strain_depth_profile`) in a last row.
    title
        Figure title.
    region_note
        What the mapped voxels are (the profile's title says it), e.g. the lit crystal.

    Returns
    -------
    matplotlib.figure.Figure
        Axes in µm at equal aspect, each panel cut to its mapped voxels; colour limits ± the 99th percentile of
        |value| (:func:`robust_limit`).
    """
    sets = [(maps, False)] + ([(sample_maps, True)] if sample_maps is not None else [])
    f0 = np.asarray(to_numpy(maps.eps_zz))
    n_sl = 3 if f0.ndim == 3 else 1
    profile = sample_maps is not None and f0.ndim == 3
    n_rows = 3 * len(sets) + int(profile)
    fig = plt.figure(figsize=(4.2 * n_sl, 3.2 * n_rows + 0.4))
    grid = fig.add_gridspec(n_rows, n_sl)
    axes = np.array([[fig.add_subplot(grid[r, c]) for c in range(n_sl)] for r in range(3 * len(sets))])
    for k, (m, sample) in enumerate(sets):
        names = ("x", "y", "z") if m.frame == "sample" else ("e1", "e2", "e3")
        first = np.asarray(to_numpy(m.eps_zz))
        centre = _slice_centre(np.isfinite(first).astype(float)) if first.ndim == 3 else None
        vox = np.broadcast_to(np.asarray(m.voxel_size_m, float), (3,))
        origin = np.asarray(m.origin_m, float) if m.frame == "sample" else np.zeros(3)
        for i, (sym, unit_label, attr, scale) in enumerate(_STRAIN_FIELDS):
            f = np.asarray(to_numpy(getattr(m, attr)), float) * scale
            lim = robust_limit(f)
            row = 3 * k + i
            slices = _centre_slices(f, centre, m.voxel_size_m, axis_names=names, first_horizontal=sample)
            order = (1, 2, 0) if sample and len(slices) == 3 else tuple(range(len(slices)))   # x–z, x–y, y–z
            for col, j in enumerate(order):
                name, s, ext, labels = slices[j]
                if sample and ext is not None:
                    rest = [a for a in range(3) if a != j]
                    ext = _shift_extent(ext, ((origin[rest[0]] - vox[rest[0]] / 2) * 1e6,
                                              (origin[rest[1]] - vox[rest[1]] / 2) * 1e6))
                if sample and centre is not None:
                    name = f"{names[j]} = {(origin[j] + centre[j] * vox[j]) * 1e6:.3g} µm"
                s, ext = _crop_to_finite(s, ext)
                ax = axes[row, col]
                im = _show(ax, np.ma.masked_invalid(s), ext, labels, cmap="RdBu_r", vmin=-lim, vmax=lim)
                ax.set_title(f"{m.frame} frame: {sym} {name}", fontsize=9)
                labelled_colorbar(fig, im, ax, unit_label)
    if profile:
        assert sample_maps is not None
        _draw_depth_profile(fig.add_subplot(grid[-1, :]), strain_depth_profile(sample_maps), region_note=region_note)
    vox_nm = " × ".join(f"{v * 1e9:.3g}" for v in maps.voxel_size_m)
    fig.suptitle(f"{title} (voxel {vox_nm} nm; colour ± 99th percentile"
                 + ("; sample frame: x along the surface, z ∥ Q)" if sample_maps is not None else ")"))
    return fig


def save_strain_slices(path: str | Path, maps: StrainMaps, *, title: str = "strain",
                       theta_bragg_rad: float | None = None, centre_position_m: Any = None,
                       footer: FigureFooter | None = None, geometry: Any = None, region: Any = None,
                       region_note: str = "every mapped voxel") -> Path:
    """Write :func:`build_strain_figure` as PNG; with ``theta_bragg_rad`` or ``geometry`` also the sample-frame maps.

    Parameters
    ----------
    path, maps, title, footer
        As :func:`build_strain_figure` and :func:`analysis.figure_style.finish_figure`.
    theta_bragg_rad
        Bragg angle: adds the maps resampled to the sample frame (:func:`analysis.strain.map_to_sample_frame`).
    centre_position_m
        Sample position (x, y, z) of the grid's centre voxel (N//2), e.g. from the object's placement, so that the
        sample-frame axes match :func:`save_object_slices` with the same placement; default 0.
    geometry
        The :class:`analysis.geometry.BraggGeometry` of the maps. With a general diffractometer frame
        (``geometry.frame``) the maps of :func:`analysis.diffractometer.strain_native` are resampled onto the
        diffractometer's sample frame (x, y, z of the sample; values still ε along Q and the tilts about the
        axes ⟂ Q, docs/geometry.md) instead of the symmetric axes of ``theta_bragg_rad``; without a frame it
        stands for ``theta_bragg_rad``.
    region
        Boolean array on the maps' grid: only these voxels are drawn (e.g. where the probe lit the crystal, the
        data constrain ρ; elsewhere the maps show the unconstrained start); None: every mapped voxel.
    region_note
        A few words naming ``region`` (in the depth profile's title).

    Returns
    -------
    Path
        ``path``.
    """
    if region is not None:
        maps = restrict_maps(maps, region)
    sample = None
    general = geometry is not None and getattr(geometry, "frame", None) is not None
    if geometry is not None and not general:
        theta_bragg_rad = float(geometry.theta_bragg_rad)
    if ((general or theta_bragg_rad is not None) and maps.frame == "reconstruction"
            and np.asarray(maps.eps_zz).ndim == 3):
        if general:
            from analysis.diffractometer import map_to_reflection_frame  # xrayutilities: only when needed

            sample = map_to_reflection_frame(maps, geometry, axes=np.eye(3))
        else:
            assert theta_bragg_rad is not None
            sample = map_to_sample_frame(maps, theta_bragg_rad=theta_bragg_rad)
        if centre_position_m is not None:
            o = np.asarray(sample.origin_m, float) + np.asarray(centre_position_m, float).reshape(3)
            sample = dataclasses.replace(sample, origin_m=(float(o[0]), float(o[1]), float(o[2])))
    return _save(build_strain_figure(maps, sample_maps=sample, title=title, region_note=region_note), path, footer)


def restrict_maps(maps: StrainMaps, region: Any) -> StrainMaps:
    """``maps`` with every voxel outside ``region`` (bool, the maps' shape) masked: NaN and ``mask`` False.

    Parameters
    ----------
    maps
        Strain and tilt maps.
    region
        Voxels to keep.

    Returns
    -------
    StrainMaps
        A copy; ``maps`` is unchanged.
    """
    keep = np.asarray(to_numpy(region), bool)
    eps = np.asarray(to_numpy(maps.eps_zz))
    if keep.shape != eps.shape:
        raise ValueError(f"restrict_maps: region of shape {keep.shape}, the maps have {eps.shape}")

    def cut(a: Array) -> np.ndarray:
        return np.where(keep, np.asarray(to_numpy(a), float), np.nan)

    return dataclasses.replace(maps, eps_zz=cut(maps.eps_zz), omega_x_rad=cut(maps.omega_x_rad),
                               omega_y_rad=cut(maps.omega_y_rad),
                               mask=np.asarray(to_numpy(maps.mask), bool) & keep)


def build_probe_figure(probe: Array, *, pixel_size_m: float | tuple[float, float] = 1.0, title: str = "probe",
                       amplitude_unit: str = "arb. units", axis_names: tuple[str, str] = ("r2", "r3")) -> Figure:
    """Probe amplitude (colour bar with unit) and complex HSV image with a phase colour wheel; axes in µm.

    Parameters
    ----------
    probe
        2D complex probe, rows along ``axis_names[0]``.
    pixel_size_m
        Pixel size (rows, cols) in metres.
    title
        Figure title.
    amplitude_unit
        Unit of |P| (e.g. ``"√photons per pixel"``; default ``"arb. units"``).
    axis_names
        Names of the (row, column) axes.

    Returns
    -------
    matplotlib.figure.Figure
    """
    p = np.asarray(to_numpy(probe))
    if p.ndim != 2:
        raise ValueError(f"save_probe: expected a 2D probe, found shape {p.shape}")
    d = np.broadcast_to(np.asarray(pixel_size_m, float), (2,))
    ext = [0.0, p.shape[1] * d[1] * 1e6, 0.0, p.shape[0] * d[0] * 1e6]
    labels = (f"{axis_names[1]} (µm)", f"{axis_names[0]} (µm)")
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    im = _show(axes[0], np.abs(p), ext, labels, cmap="magma")
    axes[0].set_title("|P|")
    labelled_colorbar(fig, im, axes[0], f"|P| ({amplitude_unit})")
    amax = float(np.abs(p).max()) if p.size else 1.0
    _complex_panel(fig, axes[1], p, ext, labels, amplitude_max=amax or 1.0, phase_threshold=0.0, wheel=True)
    axes[1].set_title("P (hue = phase, value = |P|)")
    fig.suptitle(title)
    return fig


def save_probe(path: str | Path, probe: Array, *, pixel_size_m: float | tuple[float, float] = 1.0,
               title: str = "probe", amplitude_unit: str = "arb. units", axis_names: tuple[str, str] = ("r2", "r3"),
               footer: FigureFooter | None = None) -> Path:
    """Write :func:`build_probe_figure` as PNG.

    Returns
    -------
    Path
        ``path``.
    """
    fig = build_probe_figure(probe, pixel_size_m=pixel_size_m, title=title, amplitude_unit=amplitude_unit,
                             axis_names=axis_names)
    return _save(fig, path, footer)


def support_events(recipe: Mapping[str, Any], n_epie: int) -> tuple[list[tuple[int, str]], tuple[int, int] | None]:
    """Support steps of a recipe (``dataclasses.asdict(Recipe)``) on the iteration axis (1-based).

    Parameters
    ----------
    recipe
        The recipe as a dict (``ReconstructionResult.recipe``); its ``support`` holds the thickness schedule
        (ePIE sweep, thickness) and the shrink-wrap window.
    n_epie
        ePIE sweeps that ran (events after them are not drawn).

    Returns
    -------
    events : list of (int, str)
        (iteration, "T = … µm") where the slab thickness changes.
    shrinkwrap : (int, int) or None
        First and last iteration at which shrink-wrap runs, within the ePIE sweeps.
    """
    sup = recipe.get("support") or {}
    events: list[tuple[int, str]] = []
    if sup.get("kind", "slab") == "slab":
        for start, thick in list(sup.get("thickness_schedule_m") or [])[1:]:
            if 0 < int(start) < n_epie:
                events.append((int(start) + 1, f"T = {float(thick) * 1e6:.2g} µm"))
    sw = None
    start = sup.get("shrinkwrap_start_iter")
    if start is not None and int(start) < n_epie:
        sw = (int(start) + 1, min(int(sup.get("shrinkwrap_stop_iter", n_epie)), n_epie - 1) + 1)
    return events, sw


def build_convergence_figure(costs: Any, phases: Any, *, r_factors: Mapping[str, float] | None = None,
                             r_factor_history: Any = None, recipe: Mapping[str, Any] | None = None,
                             title: str = "convergence") -> Figure:
    """Cost per iteration with the phases marked, and the R-factor.

    The ePIE error and the ML cost have different definitions, so each phase is drawn relative to its
    first iteration (the jump at the switch is a change of quantity, not of state); a vertical line
    marks where each phase starts (gid ``"phase-start-<phase>"``), dashed lines the slab-thickness steps
    and a shaded band the shrink-wrap window (from ``recipe``).

    Parameters
    ----------
    costs, phases
        Cost and phase name ("epie", "ml") per iteration.
    r_factors
        R-factor before the first iteration (``"initial"``) and at the end of each phase.
    r_factor_history
        R-factor per iteration (NaN where not computed), drawn when given.
    recipe
        ``dataclasses.asdict(Recipe)`` for the support schedule.
    title
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels: relative cost, R-factor.
    """
    c = np.asarray(costs, float)
    ph = np.asarray(phases).astype(str)
    if c.shape != ph.shape:
        raise ValueError(f"convergence: {c.size} costs but {ph.size} phase labels; they must match")
    it = np.arange(1, c.size + 1)
    fig, (ax, axr) = plt.subplots(2, 1, figsize=(8, 6.4), sharex=True)
    names = list(dict.fromkeys(ph.tolist()))
    ends: dict[str, int] = {}
    for k, name in enumerate(names):
        sel = np.flatnonzero(ph == name)
        first = int(sel[0])
        ends[name] = int(sel[-1]) + 1
        ref = c[first] if np.isfinite(c[first]) and c[first] > 0 else 1.0
        label = {"epie": "ePIE error", "ml": "ML cost"}.get(name, name)
        ax.semilogy(it[sel], np.maximum(c[sel] / ref, 1e-300), ".-", ms=2, color=f"C{k}",
                    label=f"{label} / its value at iteration {first + 1}")
        for a in (ax, axr):
            a.axvline(first + 1, color=f"C{k}", lw=1.2, gid=f"phase-start-{name}")
        ax.annotate(f"{name.upper() if name == 'ml' else 'ePIE' if name == 'epie' else name} starts",
                    (first + 1, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color=f"C{k}")
    n_epie = int(np.sum(ph == "epie"))
    if recipe is not None:
        events, sw = support_events(recipe, n_epie)
        for x, lab in events:
            ax.axvline(x, color="0.4", ls="--", lw=0.8, gid="support-step")
            ax.annotate(lab, (x, 0.02), xycoords=("data", "axes fraction"), rotation=90, fontsize=7, color="0.3")
        if sw is not None:
            ax.axvspan(sw[0], sw[1], color="0.85", alpha=0.6, gid="shrink-wrap", label="shrink-wrap")
    ax.set_ylabel("cost relative to phase start")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title)
    if r_factor_history is not None:
        rh = np.asarray(r_factor_history, float)
        axr.plot(np.arange(1, rh.size + 1)[np.isfinite(rh)], rh[np.isfinite(rh)], ".-", ms=3, label="R-factor")
    if r_factors:
        xs = [0] + [ends[n] for n in names if n in r_factors]
        ys = [r_factors.get("initial", np.nan)] + [r_factors[n] for n in names if n in r_factors]
        axr.plot(xs, ys, "o-", color="k", label="R-factor (start, end of each phase)")
        for x, y in zip(xs, ys, strict=True):
            if np.isfinite(y):
                axr.annotate(f"{y:.3g}", (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7)
    axr.set_ylabel("R-factor Σ|√I − |Ψ||/Σ√I")
    axr.set_xlabel("iteration")
    if axr.get_legend_handles_labels()[0]:
        axr.legend(fontsize=7)
    else:
        axr.text(0.5, 0.5, "no R-factor recorded", transform=axr.transAxes, ha="center")
    return fig


def save_convergence(path: str | Path, costs: Any, phases: Any, *, r_factors: Mapping[str, float] | None = None,
                     r_factor_history: Any = None, recipe: Mapping[str, Any] | None = None,
                     title: str = "convergence", footer: FigureFooter | None = None) -> Path:
    """Write :func:`build_convergence_figure` as PNG.

    Returns
    -------
    Path
        ``path``.
    """
    fig = build_convergence_figure(costs, phases, r_factors=r_factors, r_factor_history=r_factor_history,
                                   recipe=recipe, title=title)
    return _save(fig, path, footer)


def build_map_figure(fields: Sequence[tuple[str, str, Array]], *, pixel_size_m: Any = None,
                     axis_names: Sequence[str] = ("row", "col", "depth"), title: str = "",
                     symmetric: Sequence[bool] | None = None) -> Figure:
    """One row per field: its central slices (2D: the map itself), each with a labelled colour bar.

    Parameters
    ----------
    fields
        (title, colour-bar label with unit, array) per field; a complex array is drawn as hue = phase with a
        colour wheel (its label names the amplitude), a real one with a colour bar. NaN is blank.
    pixel_size_m
        Pixel/voxel sizes (axes in µm at equal aspect); None: pixel indices.
    axis_names
        Names of the array axes.
    title
        Figure title.
    symmetric
        Per field: colour limits ± the 99th percentile of |value| (diverging map) instead of min…max.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not fields:
        raise ValueError("build_map_figure: no field to draw")
    arrays = [np.asarray(to_numpy(f[2])) for f in fields]
    n_cols = max(3 if a.ndim == 3 else 1 for a in arrays)
    fig, axes = plt.subplots(len(fields), n_cols, figsize=(4.2 * n_cols, 3.4 * len(fields) + 0.4), squeeze=False)
    for i, ((name, label, _), a) in enumerate(zip(fields, arrays, strict=True)):
        sym = bool(symmetric[i]) if symmetric is not None else False
        weights = np.abs(np.nan_to_num(a)) if np.iscomplexobj(a) else np.isfinite(a).astype(float)
        centre = _slice_centre(weights) if a.ndim == 3 else None
        slices = _centre_slices(a, centre, pixel_size_m, axis_names=axis_names)
        for j in range(n_cols):
            ax = axes[i, j]
            if j >= len(slices):
                ax.set_visible(False)
                continue
            sname, s, ext, labels = slices[j]
            if np.iscomplexobj(s):
                amax = float(np.nanmax(np.abs(s))) if np.isfinite(np.abs(s)).any() else 1.0
                _complex_panel(fig, ax, s, ext, labels, amplitude_max=amax or 1.0, phase_threshold=0.0,
                               wheel=j == 0)
            else:
                finite = np.asarray(s, float)[np.isfinite(s)]
                if sym:
                    lim = robust_limit(a)
                    kw: dict[str, Any] = {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}
                else:
                    kw = {"cmap": "viridis"}
                    if finite.size:
                        kw.update(vmin=float(finite.min()), vmax=float(finite.max()))
                im = _show(ax, np.ma.masked_invalid(np.asarray(s, float)), ext, labels, **kw)
                labelled_colorbar(fig, im, ax, label)
            ax.set_title(f"{name} {sname}".strip(), fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def save_map_figure(path: str | Path, fields: Sequence[tuple[str, str, Array]], *, pixel_size_m: Any = None,
                    axis_names: Sequence[str] = ("row", "col", "depth"), title: str = "",
                    symmetric: Sequence[bool] | None = None, footer: FigureFooter | None = None) -> Path:
    """Write :func:`build_map_figure` as PNG.

    Returns
    -------
    Path
        ``path``.
    """
    fig = build_map_figure(fields, pixel_size_m=pixel_size_m, axis_names=axis_names, title=title,
                           symmetric=symmetric)
    return _save(fig, path, footer)


def save_error_history(path: str | Path, errors: Any, *, ylabel: str, title: str = "convergence",
                       footer: FigureFooter | None = None) -> Path:
    """Error per iteration (log scale) as PNG, the final value written on the plot.

    Returns
    -------
    Path
        ``path``.
    """
    e = np.asarray(errors, float).ravel()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    if e.size:
        ax.semilogy(np.arange(1, e.size + 1), np.maximum(e, 1e-300), ".-", ms=3)
        ax.annotate(f"final {e[-1]:.4g}", (e.size, max(float(e[-1]), 1e-300)), xytext=(-60, 10),
                    textcoords="offset points", fontsize=8)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path, footer)
