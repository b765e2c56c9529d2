"""Deterministic FrameSources for tests: frames that encode the inputs that made them.

:class:`EncodingFrameSource` writes stage position, rocking/arm offsets, flux and a call
counter into the first row of every frame, so a test can check the frame-to-position
mapping exactly with :func:`decode_frame`. :class:`GaussianRockingSource` gives a
rocking curve (ROI sum vs angle) for alignment tests.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from analysis.geometry import Roi

_OFFSET = 2**30
ENCODED_FIELDS = ("x_nm", "y_nm", "rocking_offset_udeg", "arm_offset_udeg", "flux_milli", "call")
"""Order of the integers stored in ``frame[0, :6]`` by :class:`EncodingFrameSource`."""


def _roi_shape(roi: Roi | None, detector_shape: tuple[int, int]) -> tuple[int, int]:
    return roi.shape if roi is not None else detector_shape


class EncodingFrameSource:
    """FrameSource whose frame[0, :6] encodes its inputs; other pixels are ``fill`` × flux.

    Positions are stored in nm, angles in µdeg, flux × 1000 (offset by 2**30 to stay unsigned).
    """

    def __init__(self, detector_shape: tuple[int, int] = (16, 16), fill: int = 7) -> None:
        if detector_shape[1] < len(ENCODED_FIELDS):
            raise ValueError(f"detector_shape {detector_shape}: need >= {len(ENCODED_FIELDS)} columns")
        self.detector_shape = tuple(detector_shape)
        self.fill = int(fill)
        self.n_calls = 0
        self._lock = threading.Lock()

    def frame(self, *, stage_xyz_m: tuple[float, float, float], rocking_offset_deg: float,
              detector_arm_offset_deg: float, exposure_s: float, flux_scale: float,
              roi: Roi | None, rng: np.random.Generator) -> np.ndarray:
        """Return a uint32 frame (ROI shape) encoding the inputs."""
        with self._lock:
            self.n_calls += 1
            call = self.n_calls
        shape = _roi_shape(roi, self.detector_shape)
        if shape[1] < len(ENCODED_FIELDS):
            raise ValueError(f"ROI {shape}: need >= {len(ENCODED_FIELDS)} columns to encode the inputs")
        out = np.full(shape, int(round(self.fill * flux_scale)), dtype=np.uint32)
        vals = (stage_xyz_m[0] * 1e9, stage_xyz_m[1] * 1e9, rocking_offset_deg * 1e6,
                detector_arm_offset_deg * 1e6, flux_scale * 1e3)
        out[0, :5] = [int(round(v)) + _OFFSET for v in vals]
        out[0, 5] = call
        return out


def decode_frame(frame: np.ndarray) -> dict[str, float]:
    """Inverse of :class:`EncodingFrameSource`: x_um, y_um, rocking_offset_deg, arm_offset_deg, flux_scale, call."""
    r = [int(v) - _OFFSET for v in np.asarray(frame)[0, :5]]
    return {"x_um": r[0] * 1e-3, "y_um": r[1] * 1e-3, "rocking_offset_deg": r[2] * 1e-6,
            "arm_offset_deg": r[3] * 1e-6, "flux_scale": r[4] * 1e-3, "call": int(frame[0, 5])}


class GaussianRockingSource:
    """FrameSource with a uniform frame of height peak·flux·exp(−½((offset − centre)/σ)²) + background."""

    def __init__(self, detector_shape: tuple[int, int] = (8, 8), *, centre_offset_deg: float = 0.0,
                 sigma_deg: float = 0.01, peak_counts: float = 1000.0, background_counts: float = 1.0) -> None:
        if not sigma_deg > 0:
            raise ValueError(f"sigma_deg must be > 0, got {sigma_deg}")
        self.detector_shape = tuple(detector_shape)
        self.centre_offset_deg, self.sigma_deg = float(centre_offset_deg), float(sigma_deg)
        self.peak_counts, self.background_counts = float(peak_counts), float(background_counts)

    def frame(self, *, stage_xyz_m: tuple[float, float, float], rocking_offset_deg: float,
              detector_arm_offset_deg: float, exposure_s: float, flux_scale: float,
              roi: Roi | None, rng: np.random.Generator) -> np.ndarray:
        """Return a uniform uint32 frame following the Gaussian rocking curve."""
        z = (rocking_offset_deg - self.centre_offset_deg) / self.sigma_deg
        v = self.background_counts + self.peak_counts * flux_scale * math.exp(-0.5 * z * z)
        return np.full(_roi_shape(roi, self.detector_shape), int(round(v)), dtype=np.uint32)


class HookedFrameSource:
    """Wraps a FrameSource and runs ``action(kwargs)`` during its ``k``-th acquisition.

    Tests use it to pause the RunEngine, dump the beam or kill a server mid-exposure.
    ``action`` may return replacement keyword arguments for that frame (None keeps them).
    """

    def __init__(self, source: object, k: int, action: object) -> None:
        self.source, self.k, self.action, self.n = source, int(k), action, 0
        self.detector_shape = source.detector_shape  # type: ignore[attr-defined]

    def frame(self, **kw: object) -> np.ndarray:
        """Delegate to the wrapped source, running the action on the k-th call."""
        self.n += 1
        if self.n == self.k:
            kw = self.action(kw) or kw  # type: ignore[operator]
        return self.source.frame(**kw)  # type: ignore[attr-defined]
