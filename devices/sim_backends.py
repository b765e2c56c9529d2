"""Sim backends of the Maxipix and the DFXM imaging camera: positions from the (sim) motors, physics from a FrameSource.

This is the one module of ``devices`` that binds to ``sim`` (through the FrameSource
protocol; ``sim.diffraction.BraggSimulator`` is the production source).
"""

from __future__ import annotations

import math
import threading
from typing import Any, cast

import numpy as np

from analysis.geometry import BraggGeometry, Roi
from devices.dfxm import DFXMFrameSource
from devices.maxipix import FrameSource


def _nominal_current_ma(nominal_current_ma: float | None, monitor: Any) -> float:
    """The nominal ring current (mA): the argument, else the monitor's; ValueError unless > 0."""
    nominal = nominal_current_ma if nominal_current_ma is not None else getattr(monitor, "nominal_current_ma", None)
    if nominal is None or not (math.isfinite(nominal) and nominal > 0):
        raise ValueError(f"nominal_current_ma must be > 0 (or the monitor must define it), got {nominal!r}")
    return float(nominal)


class SimMaxipixBackend:
    """MaxipixBackend that reads stage/goniometer/beam monitor and asks a FrameSource for a frame.

    ``rocking_offset_deg = theta − θ_B``, ``detector_arm_offset_deg = tth − 2θ_B`` (θ_B from
    ``geometry``), ``stage_xyz_m`` = stage (µm) × 1e-6, ``flux_scale`` = current / nominal current.
    With a general diffractometer (``geometry.diffractometer``) the rocking offset is read on the circle it
    names (η or φ, e.g. ``gonio.eta``) from its central angle, and the arm offset is the largest deviation of
    its detector circles (ν, δ) from their angles (:meth:`analysis.diffractometer.Diffractometer.circle_names`).
    Every call is logged in :attr:`calls` (inputs and frame sum) for tests.
    """

    def __init__(self, frame_source: FrameSource, *, stage: Any, gonio: Any, monitor: Any,
                 geometry: BraggGeometry, nominal_current_ma: float | None = None, seed: int = 0) -> None:
        if not isinstance(frame_source, FrameSource):
            raise TypeError(f"frame_source {type(frame_source).__name__} does not follow "
                            "devices.maxipix.FrameSource (detector_shape, frame(...))")
        if not isinstance(geometry, BraggGeometry):
            raise TypeError(f"geometry must be analysis.geometry.BraggGeometry, got {type(geometry).__name__}")
        nominal = _nominal_current_ma(nominal_current_ma, monitor)
        self.frame_source = frame_source
        self.stage, self.gonio, self.monitor, self.geometry = stage, gonio, monitor, geometry
        self.nominal_current_ma = float(nominal)
        self.rocking_axis, self.arm_angles_deg = "theta", {"tth": 2 * geometry.theta_bragg_deg}
        if geometry.diffractometer is not None:   # general geometry: the circles the Diffractometer names
            from analysis.diffractometer import Diffractometer

            d = Diffractometer.from_metadata(geometry.diffractometer)
            sample_names, det_names = d.circle_names()
            self.rocking_axis = sample_names[d.rocking_circle]
            self.arm_angles_deg = dict(zip(det_names, (float(a) for a in d.detector_angles_deg), strict=True))
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []
        """One dict per acquisition: the FrameSource inputs and ``frame_sum``."""

    @property
    def detector_shape(self) -> tuple[int, int]:
        """Full detector (rows, cols) of the frame source."""
        return cast("tuple[int, int]", tuple(self.frame_source.detector_shape))

    def acquire(self, *, exposure_s: float, roi: Roi) -> np.ndarray:
        """Compute one frame at the current motor positions and beam current."""
        arm_offsets = [getattr(self.gonio, n).position - a for n, a in self.arm_angles_deg.items()]
        arm_offset_deg = max(arm_offsets, key=abs)
        inputs = dict(
            stage_xyz_m=(self.stage.x.position * 1e-6, self.stage.y.position * 1e-6,
                         self.stage.z.position * 1e-6),
            rocking_offset_deg=getattr(self.gonio, self.rocking_axis).position - self.geometry.rocking_centre_deg,
            detector_arm_offset_deg=arm_offset_deg if abs(arm_offset_deg) > 1e-9 else 0.0,
            exposure_s=exposure_s,
            flux_scale=float(self.monitor.current.get()) / self.nominal_current_ma,
            roi=roi,
        )
        with self._lock:   # the generator is not thread-safe
            frame = np.asarray(self.frame_source.frame(**inputs, rng=self._rng))
            self.calls.append({**inputs, "frame_sum": int(frame.sum(dtype=np.int64))})
        return frame


class SimDFXMCameraBackend:
    """Camera backend that reads the lens stage, DFXM goniometer and beam monitor and asks a DFXMFrameSource.

    Offsets to the aligned instrument: δφ = theta − θ_B, δχ = chi − ``chi_ref_deg``,
    Δ2θ = tth − 2θ_B (rad), lens translation (z, y) µm → m and focus x µm → m relative to
    ``lens_ref_um`` (x, y, z); θ_B from the geometry's reflection. Lens tilts are read but
    not modelled. ``flux_scale`` = current / nominal current. Every call is logged in :attr:`calls`.
    """

    def __init__(self, frame_source: Any, *, lens: Any, gonio: Any, monitor: Any, geometry: Any,
                 chi_ref_deg: float = 0.0, lens_ref_um: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 nominal_current_ma: float | None = None, seed: int = 0) -> None:
        if not isinstance(frame_source, DFXMFrameSource):
            raise TypeError(f"frame_source {type(frame_source).__name__} does not follow "
                            "devices.dfxm.DFXMFrameSource (detector_shape, frame(...))")
        if getattr(geometry, "reflection", None) is None:
            raise ValueError("SimDFXMCameraBackend: geometry needs reflection metadata (θ_B); pass an "
                             "FPDFXMGeometry with reflection=Reflection(...)")
        nominal = _nominal_current_ma(nominal_current_ma, monitor)
        self.frame_source = frame_source
        self.lens, self.gonio, self.monitor, self.geometry = lens, gonio, monitor, geometry
        self.theta_bragg_deg = math.degrees(geometry.bragg_angle_rad)
        self.chi_ref_deg = float(chi_ref_deg)
        self.lens_ref_um = tuple(float(v) for v in lens_ref_um)
        self.nominal_current_ma = float(nominal)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []
        """One dict per acquisition: the DFXMFrameSource inputs and ``frame_sum``."""

    @property
    def detector_shape(self) -> tuple[int, int]:
        """Full camera (rows, cols) of the frame source."""
        return cast("tuple[int, int]", tuple(self.frame_source.detector_shape))

    def acquire(self, *, exposure_s: float, roi: Roi) -> np.ndarray:
        """Compute one frame at the current motor positions and beam current, cropped to ``roi``."""
        lx, ly, lz = self.lens_ref_um
        inputs = dict(
            rock_rad=math.radians(self.gonio.theta.position - self.theta_bragg_deg),
            roll_rad=math.radians(self.gonio.chi.position - self.chi_ref_deg),
            two_theta_rad=math.radians(self.gonio.tth.position - 2 * self.theta_bragg_deg),
            lens_translation_m=((self.lens.z.position - lz) * 1e-6, (self.lens.y.position - ly) * 1e-6),
            lens_focus_m=(self.lens.x.position - lx) * 1e-6,
            exposure_s=exposure_s,
            flux_scale=float(self.monitor.current.get()) / self.nominal_current_ma,
        )
        with self._lock:   # the generator is not thread-safe
            frame = np.asarray(self.frame_source.frame(**inputs, rng=self._rng))
            self.calls.append({**inputs, "frame_sum": int(frame.sum(dtype=np.int64))})
        return frame[roi.row0_px:roi.row0_px + roi.n_rows_px, roi.col0_px:roi.col0_px + roi.n_cols_px]
