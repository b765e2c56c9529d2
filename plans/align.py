"""Rocking-curve alignment: scan theta, find the peak of the detector's ROI sum, go there."""


from collections.abc import Mapping
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import numpy as np
from bluesky.utils import MsgGenerator

from plans._common import START_SCHEMA_VERSION, check_exposure, check_within_limits, merge_md
from plans._protocols import AreaDetector, RockingGoniometer, check_axes, check_detector
from plans.patterns import rocking_angles_deg


class NoPeakFoundError(RuntimeError):
    """The rocking curve shows no usable peak (flat, or its maximum sits at the scan edge)."""


def rocking_curve_centre_deg(angles_deg: np.ndarray, totals: np.ndarray, *,
                             min_contrast: float = 2.0) -> float:
    """Centroid (deg) of the part of a rocking curve above half maximum (background = minimum).

    Raises NoPeakFoundError when max/min contrast is below ``min_contrast`` or the maximum
    lies on the first or last angle.
    """
    a = np.asarray(angles_deg, float)
    t = np.asarray(totals, float)
    if a.shape != t.shape or a.size < 3:
        raise ValueError(f"need >= 3 matching angles and totals, got {a.shape} and {t.shape}")
    bg, top = float(t.min()), float(t.max())
    if top <= 0 or (bg > 0 and top < min_contrast * bg):
        raise NoPeakFoundError(
            f"no rocking-curve peak: ROI sum ranges {bg:g}..{top:g} over {a.min():g}..{a.max():g} deg "
            f"(contrast < {min_contrast}); check the beam, the ROI and the angular range")
    k = int(np.argmax(t))
    if k in (0, a.size - 1):
        raise NoPeakFoundError(
            f"rocking-curve maximum at the scan edge ({a[k]:g} deg); widen or recentre the scan")
    w = t - bg
    w[w < 0.5 * (top - bg)] = 0.0
    return float(np.sum(w * a) / np.sum(w))


def rocking_curve_align(detector: AreaDetector, gonio: RockingGoniometer, *, centre_deg: float,
                        step_deg: float, n_angles: int, exposure_s: float,
                        signal_key: str | None = None, min_contrast: float = 2.0,
                        md: Mapping[str, Any] | None = None) -> MsgGenerator[float]:
    """Scan ``theta`` over ``n_angles`` steps, move it to the rocking-curve centroid and return it.

    ``signal_key`` defaults to the detector's first hinted field (the Maxipix ``total``).
    On failure theta returns to where it started and NoPeakFoundError is raised (the run
    ends with exit_status 'fail').
    """
    check_detector(detector)
    check_axes(gonio, "goniometer", ("theta",))
    angles = rocking_angles_deg(centre_deg, step_deg, n_angles)
    if n_angles < 3:
        raise ValueError(f"n_angles must be >= 3 to locate a peak, got {n_angles}")
    exposure = check_exposure(exposure_s)
    check_within_limits(gonio.theta, angles, "alignment angles")
    key = signal_key or (list(getattr(detector, "hints", {}).get("fields", [])) or [None])[0]
    if key is None:
        raise ValueError(f"detector {detector.name!r} has no hinted field; pass signal_key= (e.g. 'mpx_total')")
    _md = merge_md({
        "pxm_schema": START_SCHEMA_VERSION, "plan_name": "rocking_curve_align",
        "plan_args": {"detector": repr(detector), "gonio": repr(gonio), "centre_deg": centre_deg,
                      "step_deg": step_deg, "n_angles": n_angles, "exposure_s": exposure,
                      "signal_key": key},
        "detectors": [detector.name], "motors": [gonio.theta.name], "num_points": int(n_angles),
        "shape": [int(n_angles)], "extents": [[float(angles[0]), float(angles[-1])]], "exposure_s": exposure,
        "hints": {"dimensions": [([gonio.theta.name], "primary")]},
        "pattern": {"kind": "rocking_curve", "angles_deg": angles.tolist(), "units": {"angles": "deg"}},
    }, md)

    totals: list[float] = []
    found: list[float] = []

    def read_and_record(devices: Any, name: str = "primary") -> MsgGenerator[dict[str, Any]]:
        reading = yield from bps.trigger_and_read(devices, name=name)
        if key not in reading:
            raise ValueError(f"signal_key {key!r} not among the detector readings {sorted(reading)}")
        totals.append(float(reading[key]["value"]))
        return reading

    def per_step(detectors: Any, step: Any, pos_cache: Any, take_reading: Any = None) -> MsgGenerator[None]:
        """``bps.one_nd_step``; after the last angle, inside the run, go to the centroid (or back, and fail)."""
        yield from bps.one_nd_step(detectors, step, pos_cache, take_reading=read_and_record)
        if len(totals) < angles.size:
            return
        try:
            centre = rocking_curve_centre_deg(angles, np.asarray(totals), min_contrast=min_contrast)
        except NoPeakFoundError:
            yield from bps.mv(gonio.theta, start_deg)
            raise
        yield from bps.mv(gonio.theta, centre)
        found.append(centre)

    yield from bps.configure(detector, {"exposure_s": exposure})
    start_deg = float((yield from bps.rd(gonio.theta)))
    # the curve is a list_scan (plan_pattern "inner_list_product"); the centroid is pxm's half-maximum one
    # (rocking_curve_centre_deg), not bp.tune_centroid's whole-curve centroid without background.
    yield from bp.list_scan([detector], gonio.theta, angles.tolist(), per_step=per_step, md=_md)
    return found[0]
