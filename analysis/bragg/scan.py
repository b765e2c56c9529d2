"""The scan a Bragg-ptychography reconstruction takes: :class:`BraggScan`, validated once.

Every producer makes the same value: the dataset reader (:meth:`BraggScan.from_dataset`,
:meth:`BraggScan.from_share` for one MPI rank), the live frame grid of ``pxm.live`` (the constructor,
with unmeasured angles masked) and the test factories. :func:`analysis.bragg.pipeline.reconstruct`
and :func:`analysis.bragg.pipeline.build_engine` take nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.geometry import BraggGeometry

if TYPE_CHECKING:
    from analysis.dataset import BraggDataset, DatasetShare

__all__ = ["BraggScan"]


def _frozen(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (the caller's array stays writable)."""
    v = a.view()
    v.flags.writeable = False
    return v


def _fail(key: str, problem: str, fix: str) -> ValueError:
    return ValueError(f"BraggScan.{key}: {problem}; {fix}")


@dataclass(frozen=True, kw_only=True)
class BraggScan:
    """Frames, mask, stage positions and rocking offsets of one grid scan, as the engine takes them.

    Validated once, in the constructor; a bad input raises ValueError with one line naming the field,
    the problem and the fix. Arrays are stored as read-only views: float32 frames, bool mask
    (ANGLE, N1, N2), float stage positions and offsets.

    Under MPI a scan may hold only this rank's frames: ``positions`` then lists their global indices
    (rows of ``frames``), while ``stage_xyz_m`` always holds every position.
    """

    geometry: BraggGeometry
    """Geometry of the scan (detector crop N1 × N2, n_angles, rocking step)."""
    frames: np.ndarray = field(repr=False)
    """(POS, ANGLE, N1, N2) float32 photon counts, ANGLE in rocking order; finite and >= 0 where valid."""
    mask: np.ndarray = field(repr=False)
    """(N1, N2) or (ANGLE, N1, N2) bool, True on live pixels; stored as (ANGLE, N1, N2)."""
    stage_xyz_m: np.ndarray = field(repr=False)
    """(POS_ALL, 3) sample stage translation of every position of the scan, metres."""
    rocking_offsets_deg: np.ndarray = field(repr=False)
    """(ANGLE,) rocking offsets from θ_B in degrees, in steps of ``geometry.rocking_step_deg``; their absolute
    values place q3 (:func:`analysis.geometry.rocking_shift_steps`: an even count may sit between two angles)."""
    frame_valid: np.ndarray | None = field(default=None, repr=False)
    """None (every frame measured) or (POS, ANGLE) bool, True on measured frames; invalid frames may hold
    anything and are left free by the engine."""
    positions: np.ndarray | None = field(default=None, repr=False)
    """None (``frames`` holds every position) or (POS,) increasing global indices of the rows of ``frames``
    (one MPI rank's share)."""
    sample: Mapping[str, Any] = field(default_factory=dict)
    """Sample description (name, material, thickness_m, ...)."""
    provenance: Mapping[str, Any] = field(default_factory=dict)
    """Where the frames came from (raw uid, exporter, simulator, ...)."""
    source: str | None = None
    """The dataset file or run the scan was read from (results ``/provenance/dataset``)."""

    def __post_init__(self) -> None:
        g = self.geometry
        if not isinstance(g, BraggGeometry):
            raise _fail("geometry", f"got {type(g).__name__}", "pass an analysis.geometry.BraggGeometry "
                        "(BraggGeometry(...) or BraggGeometry.from_metadata())")
        nm, n1, n2 = g.n_angles, g.n_rows_px, g.n_cols_px
        f = np.asarray(self.frames)
        if f.ndim != 4 or f.shape[1:] != (nm, n1, n2):
            raise _fail("frames", f"shape {f.shape}, expected (POS, {nm}, {n1}, {n2}) = (POS, ANGLE, N1, N2) from "
                        "the geometry", "check the ROI and n_angles, or use the grid layout (every position at "
                        "every angle)")
        if not np.issubdtype(f.dtype, np.number) or np.iscomplexobj(f):
            raise _fail("frames", f"dtype {f.dtype}", "store real photon counts (float or integer)")
        f = f.astype(np.float32, copy=False)
        fv = self.frame_valid
        if fv is not None:
            fv = np.asarray(fv)
            if fv.dtype != bool or fv.shape != f.shape[:2]:
                raise _fail("frame_valid", f"shape {fv.shape} dtype {fv.dtype}", f"pass bool {f.shape[:2]} = "
                            "(POS, ANGLE), True on measured frames, or None")
        measured = f if fv is None else f[fv]
        if not np.all(np.isfinite(measured)):
            raise _fail("frames", "NaN or inf in measured frames", "mask bad pixels with the mask and store 0")
        if np.any(measured < 0):
            raise _fail("frames", f"{int(np.sum(measured < 0))} negative counts",
                        "subtract dark frames before and clip at 0")
        m = np.asarray(self.mask)
        if m.dtype != bool:
            raise _fail("mask", f"dtype {m.dtype}", "pass a bool array, True on live pixels")
        if m.shape == (n1, n2):
            m = np.broadcast_to(m[None], (nm, n1, n2))
        if m.shape != (nm, n1, n2):
            raise _fail("mask", f"shape {m.shape}", f"pass ({n1}, {n2}) or ({nm}, {n1}, {n2}) bool")
        n_all = f.shape[0]
        pos = self.positions
        if pos is not None:
            pos = np.asarray(pos)
            if (pos.ndim != 1 or pos.size != f.shape[0] or not np.issubdtype(pos.dtype, np.integer)
                    or (pos.size > 1 and np.any(np.diff(pos) <= 0)) or (pos.size and pos.min() < 0)):
                raise _fail("positions", f"shape {pos.shape} dtype {pos.dtype}", f"pass {f.shape[0]} increasing "
                            "global position indices, one per row of frames (or None for every position)")
            n_all = int(np.shape(self.stage_xyz_m)[0]) if np.ndim(self.stage_xyz_m) == 2 else -1
            if pos.size and pos.max() >= n_all:
                raise _fail("positions", f"index {int(pos.max())} outside the {n_all} positions of stage_xyz_m",
                            "pass stage_xyz_m of every position of the scan")
            pos = pos.astype(np.int64)
        s = np.asarray(self.stage_xyz_m, float)
        if s.shape != (n_all, 3) or not np.all(np.isfinite(s)):
            raise _fail("stage_xyz_m", f"shape {s.shape}", f"pass ({n_all}, 3) finite stage positions in metres")
        o = np.asarray(self.rocking_offsets_deg, float)
        if o.shape != (nm,) or not np.all(np.isfinite(o)):
            raise _fail("rocking_offsets_deg", f"shape {o.shape}", f"pass ({nm},) finite offsets from θ_B in degrees")
        step = g.rocking_step_deg
        if nm > 1 and not np.allclose(np.diff(o), step, rtol=0.02, atol=1e-3 * abs(step)):
            raise _fail("rocking_offsets_deg", f"steps {np.round(np.diff(o)[:3], 6)}... differ from the geometry's "
                        f"rocking_step_deg = {step}", "fix the geometry or put the angles in rocking order")
        for name, value in (("frames", f), ("mask", m), ("stage_xyz_m", s), ("rocking_offsets_deg", o),
                            ("frame_valid", fv), ("positions", pos)):
            object.__setattr__(self, name, None if value is None else _frozen(np.asarray(value)))
        object.__setattr__(self, "sample", dict(self.sample))
        object.__setattr__(self, "provenance", dict(self.provenance))

    # --- constructors ----------------------------------------------------------------------------
    @classmethod
    def from_dataset(cls, dataset: BraggDataset, *, source: str | None = None) -> BraggScan:
        """The scan of a grid-layout :class:`~analysis.dataset.BraggDataset` (mean position and angle per row/column).

        Raises
        ------
        ValueError
            A partial (flat) dataset, positions that move with the angle by more than 10 nm, or angles that
            differ between positions by more than 5 % of a step.
        """
        from analysis.dataset import scan_axes

        if dataset.layout != "grid":
            raise ValueError("dataset: flat layout (a partial scan); the reconstruction needs every position at every "
                             "angle (grid layout)")
        stage, offsets = scan_axes(dataset.rocking_angle_deg, dataset.stage_position_m, dataset.geometry)
        return cls(geometry=dataset.geometry, frames=np.asarray(dataset.frames, np.float32),
                   mask=np.asarray(dataset.detector_mask, bool), stage_xyz_m=stage, rocking_offsets_deg=offsets,
                   sample=dataset.sample, provenance=dataset.provenance, source=source)

    @classmethod
    def from_share(cls, share: DatasetShare, *, source: str | None = None) -> BraggScan:
        """The scan of one MPI rank's :class:`~analysis.dataset.DatasetShare`: its frames, every stage position."""
        from analysis.dataset import scan_axes

        stage, offsets = scan_axes(share.rocking_angle_deg, share.stage_position_m, share.geometry)
        return cls(geometry=share.geometry, frames=np.asarray(share.local.frames, np.float32),
                   mask=np.asarray(share.local.detector_mask, bool), stage_xyz_m=stage, rocking_offsets_deg=offsets,
                   positions=np.asarray(share.positions, np.int64), sample=share.sample, provenance=share.provenance,
                   source=source)

    # --- views -------------------------------------------------------------------------------------
    @property
    def n_positions(self) -> int:
        """Positions of the whole scan (``stage_xyz_m`` rows)."""
        return int(self.stage_xyz_m.shape[0])

    @property
    def n_angles(self) -> int:
        """Rocking angles."""
        return int(self.frames.shape[1])

    @property
    def is_share(self) -> bool:
        """True when ``frames`` holds fewer positions than the scan (one MPI rank's share)."""
        return self.positions is not None and self.positions.size != self.n_positions

    def with_frames(self, frames: np.ndarray) -> BraggScan:
        """The same scan with other counts on the same grid (e.g. one half of a binomial photon split)."""
        return dataclasses.replace(self, frames=frames)
