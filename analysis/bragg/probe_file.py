"""Probe files (``format = "pxm-probe"``, ``docs/dataset-format.md`` §4): read, write, and P2 from them.

``/probe`` holds one of four layouts, told apart by its ``axes`` attribute:

* ``"p1, p2"`` — 2D beam-plane probe (V, H), ``pixel_size_m`` one number or (Δp1, Δp2);
  the default for a 2D probe without ``axes`` (files written before the attribute was read);
* ``"r2, r3"`` — 2D section P2 on (e2, e3), ``pixel_size_m`` = (Δr2, Δr3);
* ``"p1, p2, p3"`` — 3D probe on the beam frame (V, H, along k̂_i), ``voxel_size_m`` (3);
* ``"r1, r2, r3"`` — 3D probe on the reconstruction frame (e1, e2, e3), ``voxel_size_m`` (3).

Pixel N//2 of every axis is the beam axis (beam plane) or the centre of the reconstruction box.
:func:`p2_from_probe_file` turns any of them into the engine's P2 and says what it did.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.bragg.probe_init import (
    ProbeInitOptions,
    probe_from_beam_volume,
    probe_from_perpendicular,
    probe_from_section,
    section_matches_grid,
)
from analysis.geometry import BraggGeometry

__all__ = ["PROBE_FILE_FORMAT", "PROBE_AXES", "ProbeFile", "read_probe_file", "write_probe_file",
           "p2_from_probe_file"]

PROBE_FILE_FORMAT = "pxm-probe"

PROBE_AXES: dict[tuple[str, ...], tuple[str, str]] = {
    ("p1", "p2"): ("beam", "2D beam plane (V × H)"),
    ("r2", "r3"): ("reconstruction", "2D section P2 (r2 × r3)"),
    ("p1", "p2", "p3"): ("beam", "3D beam-frame probe (V × H × k_i)"),
    ("r1", "r2", "r3"): ("reconstruction", "3D reconstruction-frame probe (r1 × r2 × r3)"),
}
"""Accepted ``/probe@axes`` → (``frame``, description)."""


def _axes_key(axes: str) -> tuple[str, ...]:
    """The axis names p1…r3 in the order they appear: "p1 (vertical, V), p2 (horizontal, H)" → ("p1", "p2")."""
    return tuple(re.findall(r"\b([pr][123])\b", axes.lower()))


@dataclass(frozen=True, kw_only=True)
class ProbeFile:
    """A probe as stored: the array, its axes and its per-axis spacing."""

    probe: np.ndarray = field(repr=False)
    """(V, H), (r2, r3), (V, H, p3) or (r1, r2, r3) complex128, pixel N//2 of each axis at 0."""
    axes: tuple[str, ...] = ("p1", "p2")
    """A key of :data:`PROBE_AXES`."""
    spacing_m: tuple[float, ...] = ()
    """Pixel or voxel size along each axis of ``probe`` (m)."""
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)
    """``/@metadata`` JSON (e.g. ``raw_uid`` of the spiral run)."""

    def __post_init__(self) -> None:
        p = np.asarray(self.probe)
        if self.axes not in PROBE_AXES:
            raise ValueError(f"/probe@axes: {', '.join(self.axes) or 'none'} is not a probe layout; use one of "
                             + "; ".join(repr(', '.join(k)) for k in PROBE_AXES))
        if p.ndim != len(self.axes):
            raise ValueError(f"/probe: {p.ndim}D array of shape {p.shape}, but axes {', '.join(self.axes)!r} "
                             f"need {len(self.axes)}D; fix the array or /probe@axes")
        if min(p.shape) < 2:
            raise ValueError(f"/probe: shape {p.shape}, expected at least 2 pixels along every axis")
        if not np.issubdtype(p.dtype, np.number):
            raise ValueError(f"/probe: dtype {p.dtype}, expected complex (or real) numbers")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"/probe: {int(np.sum(~np.isfinite(p)))} NaN/inf values; the probe must be finite")
        if not np.any(p):
            raise ValueError("/probe: zero everywhere; write the measured or modelled probe")
        key = "pixel_size_m" if p.ndim == 2 else "voxel_size_m"
        if len(self.spacing_m) != p.ndim or not all(np.isfinite(d) and d > 0 for d in self.spacing_m):
            raise ValueError(f"/probe@{key}: {self.spacing_m!r}, expected {p.ndim} finite values > 0 in metres")
        object.__setattr__(self, "probe", p.astype(np.complex128))

    @property
    def frame(self) -> str:
        """``"beam"`` or ``"reconstruction"``."""
        return PROBE_AXES[self.axes][0]

    def describe(self) -> str:
        """E.g. "2D beam plane (V × H) 200×180 px of 30×45 nm"."""
        unit = "px" if self.probe.ndim == 2 else "voxels"
        return (f"{PROBE_AXES[self.axes][1]} {'×'.join(str(n) for n in self.probe.shape)} {unit} of "
                f"{'×'.join(f'{d * 1e9:.4g}' for d in self.spacing_m)} nm")


def write_probe_file(path: str | Path, probe: np.ndarray, *, pixel_size_m: float | tuple[float, ...] | None = None,
                     voxel_size_m: tuple[float, float, float] | None = None, axes: str | None = None,
                     metadata: dict[str, Any] | None = None, error_history: Any = None) -> None:
    """HDF5 probe file: ``/probe`` with attrs ``axes``, ``frame`` and ``pixel_size_m`` (2D) or ``voxel_size_m`` (3D).

    ``axes`` defaults to ``"p1, p2"`` (a 2D beam-plane probe, as ``pxm probe`` writes it); a 3D
    probe needs ``axes`` and ``voxel_size_m``. The probe is checked as :func:`read_probe_file` does.
    """
    import h5py

    p = np.asarray(probe)
    if axes is None:
        axes = "p1, p2" if p.ndim == 2 else ""
    size = pixel_size_m if p.ndim == 2 else voxel_size_m
    if size is None:
        raise ValueError(f"write_probe_file: a {p.ndim}D probe needs "
                         f"{'pixel_size_m' if p.ndim == 2 else 'voxel_size_m (3 values)'}")
    spacing = tuple(float(v) for v in np.broadcast_to(np.asarray(size, float), (p.ndim,)))
    pf = ProbeFile(probe=p, axes=_axes_key(axes), spacing_m=spacing, metadata=dict(metadata or {}))
    with h5py.File(path, "w") as f:
        f.attrs["format"] = PROBE_FILE_FORMAT
        d = f.create_dataset("probe", data=pf.probe)
        key = "pixel_size_m" if p.ndim == 2 else "voxel_size_m"
        d.attrs[key] = float(np.asarray(size)) if p.ndim == 2 and np.ndim(size) == 0 else np.asarray(spacing, float)
        d.attrs["axes"] = ", ".join(pf.axes)
        d.attrs["frame"] = pf.frame
        if error_history is not None:
            f.create_dataset("error_history", data=np.asarray(error_history, float))
        f.attrs["metadata"] = json.dumps(pf.metadata, default=str)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_probe_file(path: str | Path) -> ProbeFile:
    """The probe of a file in the §4 layout; any problem is one ValueError line naming the path and key."""
    import h5py

    if not Path(path).is_file():
        raise ValueError(f"{path}: no such probe file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not an HDF5 file ({exc}); "
                         "write the probe file as in docs/dataset-format.md §4") from exc
    with f:
        fmt = _text(f.attrs.get("format", PROBE_FILE_FORMAT))
        if fmt != PROBE_FILE_FORMAT:
            raise ValueError(f"{path}: format {fmt!r}, expected {PROBE_FILE_FORMAT!r} (docs/dataset-format.md §4)")
        if not isinstance(f.get("probe"), h5py.Dataset):
            raise ValueError(f"{path}: /probe: dataset missing; write it with `pxm probe` or as in "
                             "docs/dataset-format.md §4")
        d = f["probe"]
        if d.ndim not in (2, 3):
            raise ValueError(f"{path}: /probe: {d.ndim}D array of shape {d.shape}, expected 2D (beam plane or "
                             "(r2, r3) section) or 3D")
        if "axes" in d.attrs:
            axes = _axes_key(_text(d.attrs["axes"]))
        elif d.ndim == 2:
            axes = ("p1", "p2")
        else:
            raise ValueError(f"{path}: /probe@axes: attribute missing; a 3D probe needs axes 'p1, p2, p3' "
                             "(beam frame) or 'r1, r2, r3' (reconstruction frame)")
        key = "pixel_size_m" if d.ndim == 2 else "voxel_size_m"
        if key not in d.attrs:
            raise ValueError(f"{path}: /probe@{key}: attribute missing; give the "
                             f"{'pixel size (one value or V, H)' if d.ndim == 2 else 'voxel size (3 values)'} in m")
        try:
            raw = np.atleast_1d(np.asarray(d.attrs[key], dtype=float)).ravel()
        except (ValueError, TypeError):
            raise ValueError(f"{path}: /probe@{key}: {d.attrs[key]!r} is not a number; give it in metres") from None
        if d.ndim == 2 and raw.size == 1:
            raw = np.repeat(raw, 2)
        try:
            md = json.loads(_text(f.attrs.get("metadata", "{}")))
        except ValueError:
            raise ValueError(f"{path}: /@metadata is not JSON; write a JSON object (or nothing)") from None
        try:
            pf = ProbeFile(probe=d[()], axes=axes, spacing_m=tuple(float(v) for v in raw), metadata=md)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from None
        frame = _text(d.attrs.get("frame", pf.frame))
        if frame != pf.frame:
            raise ValueError(f"{path}: /probe@frame is {frame!r} but axes {', '.join(axes)!r} are on the "
                             f"{pf.frame!r} frame; fix one of them")
    return pf


def p2_from_probe_file(pf: ProbeFile, geometry: BraggGeometry, *,
                       options: ProbeInitOptions = ProbeInitOptions()) -> tuple[np.ndarray, str]:
    """(P2 (N2, N3) complex128, what was done: "resampled onto P2 (96×24), not re-centred, no blur").

    Beam plane: :func:`~analysis.bragg.probe_init.probe_from_perpendicular`; (r2, r3) section:
    :func:`~analysis.bragg.probe_init.probe_from_section`; beam-frame volume:
    :func:`~analysis.bragg.probe_init.probe_from_beam_volume`; reconstruction-frame volume: its central r1
    slice (index N1//2, the plane through the box centre perpendicular to e1) as an (r2, r3) section.
    """
    n2, n3 = geometry.recon_shape[1:]
    p, d, how = pf.probe, pf.spacing_m, ""
    if pf.axes == ("r1", "r2", "r3"):
        how = f"central r1 slice (index {p.shape[0] // 2}), "
        p, d = p[p.shape[0] // 2], d[1:]
        if not np.any(p):
            raise ValueError(f"/probe: the central r1 slice (index {pf.probe.shape[0] // 2}) of the 3D probe is "
                             "zero; centre the probe in the reconstruction box")
    if pf.axes in (("r2", "r3"), ("r1", "r2", "r3")):
        p2 = probe_from_section(p, d, geometry, options=options)
        as_is = section_matches_grid(p.shape, d, geometry) and not options.recentre and options.blur_px == 0
        how += f"{'used as is on' if as_is else 'resampled onto'} P2 ({n2}×{n3})"
    elif pf.axes == ("p1", "p2", "p3"):
        p2 = probe_from_beam_volume(p, d, geometry, options=options)
        how += f"sampled on the P2 plane ({n2}×{n3})"
    else:
        p2 = probe_from_perpendicular(p, d, geometry, options=options)
        how += f"resampled onto P2 ({n2}×{n3})"
    how += ", re-centred" if options.recentre else ", not re-centred"
    how += f", blur σ {options.blur_px:g} P2 px" if options.blur_px else ", no blur"
    return p2, how
