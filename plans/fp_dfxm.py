"""Fourier-ptychographic DFXM: the diversity scan (start document: docs/start-document.md, FP-DFXM)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import numpy as np
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from analysis.dfxm import (
    FPDFXMGeometry,
    FPOptions,
    check_overlap,
    fp_geometry_from_metadata,
    fp_geometry_to_metadata,
    shifts_to_pixels,
)
from plans._common import START_SCHEMA_VERSION, check_exposure, check_sample, check_within_limits, merge_md, names
from plans._protocols import AreaDetector, check_axes, check_detector
from plans.patterns import FPDiversitySettings, fp_shifts_from_offsets

LENS_AXES = ("x", "y", "z", "pitch", "yaw")
"""Axes an objective-lens stage must have: translations x (optical axis), y, z (µm); tilts pitch, yaw (mrad)."""
GONIO_AXES = ("theta", "chi", "tth")
"""Axes a DFXM goniometer must have: rocking ``theta``, roll ``chi``, objective arm ``tth`` (deg)."""


def as_fp_geometry(geometry: FPDFXMGeometry | Mapping[str, Any]) -> FPDFXMGeometry:
    """Accept an FPDFXMGeometry or its metadata dict; ValueError without reflection metadata."""
    if isinstance(geometry, Mapping):
        if geometry.get("reflection") is None:
            raise ValueError("geometry metadata has no reflection: FP-DFXM is dark field and needs "
                             "reflection={'hkl': [h, k, l], 'd_spacing_m': d} for θ_B, |G|, strain and tilt")
        geometry = fp_geometry_from_metadata(geometry)
    if not isinstance(geometry, FPDFXMGeometry):
        raise TypeError(f"geometry must be FPDFXMGeometry or its metadata dict, got {type(geometry).__name__}")
    if geometry.reflection is None or geometry.mode != "bragg":
        raise ValueError("fp_dfxm_scan: geometry has no reflection metadata (mode "
                         f"{geometry.mode!r}); pass FPDFXMGeometry(mode='bragg', reflection=Reflection(hkl=..., "
                         "d_spacing_m=...)) so θ_B, |G| and the strain/tilt conversion are known")
    return geometry


def as_fp_settings(settings: FPDiversitySettings | Mapping[str, Any]) -> FPDiversitySettings:
    """Accept FPDiversitySettings or its ``to_metadata()`` dict (queueserver passes dicts)."""
    if isinstance(settings, Mapping):
        return FPDiversitySettings.from_metadata(settings)
    if not isinstance(settings, FPDiversitySettings):
        raise TypeError("settings must be plans.patterns.FPDiversitySettings (from fp_diversity_settings) or its "
                        f"to_metadata() dict, got {type(settings).__name__}")
    settings.check()
    return settings


def check_fp_settings(settings: FPDiversitySettings, geometry: FPDFXMGeometry, *, min_overlap: float) -> float:
    """Check shifts against motor offsets, the frequency grid and the overlap; return the worst overlap.

    ValueError when the recorded shifts disagree with the offsets (docs/fp-dfxm.md, Diversity scans), lie
    off the integer frequency grid or beyond the object grid, or when neighbouring pupil
    positions overlap less than ``min_overlap`` (docs/fp-dfxm.md, Sampling).
    """
    shifts, image = fp_shifts_from_offsets(
        geometry, rock_rad=np.radians(settings.theta_deg - settings.theta_centre_deg),
        roll_rad=np.radians(settings.chi_deg - settings.chi_centre_deg),
        two_theta_rad=np.radians(settings.tth_deg - settings.tth_centre_deg),
        lens_z_m=(settings.lens_z_um - settings.lens_centre_um[0]) * 1e-6,
        lens_y_m=(settings.lens_y_um - settings.lens_centre_um[1]) * 1e-6)
    tol = 1e-3 * geometry.angle_per_freq_px_rad
    if not np.allclose(shifts, settings.shifts_rad, rtol=0, atol=tol):
        raise ValueError("settings: shifts_rad do not follow from the motor targets (docs/fp-dfxm.md, "
                         "Diversity scans); they were built for another geometry; rebuild them with "
                         "plans.patterns.fp_diversity_settings(geometry, ...)")
    shifts_to_pixels(settings.shifts_rad, geometry)
    try:
        return check_overlap(settings.shifts_rad, geometry, min_overlap=min_overlap)
    except ValueError as exc:
        raise ValueError(f"fp_dfxm_scan: pupil positions do not overlap enough; nothing was moved. {exc}") from None


def fp_dfxm_scan(camera: AreaDetector, lens: Any, gonio: Any, *, geometry: FPDFXMGeometry | Mapping[str, Any],
                 settings: FPDiversitySettings | Mapping[str, Any], sample: Mapping[str, Any], exposure_s: float,
                 min_overlap: float | None = None, monitors: Sequence[Readable] = (),
                 md: Mapping[str, Any] | None = None) -> MsgGenerator[str]:
    """Take one imaging frame at every FP diversity setting (goniometer theta/chi/tth, lens y/z).

    ``settings`` come from :func:`plans.patterns.fp_diversity_settings`. Everything is checked
    before anything moves: devices, geometry with reflection, sample, exposure, motor
    limits, and that neighbouring pupil positions overlap by ≥ ``min_overlap`` (default
    the reconstruction's ``FPOptions().min_overlap``). Geometry, reflection, settings and
    shifts go in the start document.
    """
    check_detector(camera)
    check_axes(lens, "objective-lens stage", LENS_AXES)
    check_axes(gonio, "goniometer", GONIO_AXES)
    geom = as_fp_geometry(geometry)
    sets = as_fp_settings(settings)
    sample_md = check_sample(sample)
    exposure = check_exposure(exposure_s)
    overlap_min = FPOptions().min_overlap if min_overlap is None else float(min_overlap)
    if not 0 <= overlap_min < 1:
        raise ValueError(f"min_overlap must lie in [0, 1), got {min_overlap!r}")
    worst = check_fp_settings(sets, geom, min_overlap=overlap_min)
    targets = ((gonio.theta, sets.theta_deg, "theta_deg"), (gonio.chi, sets.chi_deg, "chi_deg"),
               (gonio.tth, sets.tth_deg, "tth_deg"), (lens.z, sets.lens_z_um, "lens_z_um"),
               (lens.y, sets.lens_y_um, "lens_y_um"))
    for motor, values, what in targets:
        check_within_limits(motor, values, f"settings {what}")
    n = sets.n_frames
    motors = [t[0] for t in targets]
    geom_md = fp_geometry_to_metadata(geom)
    _md = merge_md({
        "pxm_schema": START_SCHEMA_VERSION,
        "plan_name": "fp_dfxm_scan",
        "plan_args": {"camera": repr(camera), "lens": repr(lens), "gonio": repr(gonio), "exposure_s": exposure,
                      "n_frames": n, "diversity": sets.kind, "min_overlap": overlap_min,
                      "monitors": names(monitors)},
        "detectors": [camera.name],
        "motors": names(motors),
        "num_points": n,
        "num_intervals": n - 1,
        "shape": [n],
        "extents": [[float(sets.theta_deg.min()), float(sets.theta_deg.max())]],   # of the dimension's first field
        "exposure_s": exposure,
        "hints": {"dimensions": [([gonio.theta.name, gonio.chi.name], "primary")]},
        "pattern": {**sets.to_metadata(),
                    "axes": {"theta": gonio.theta.name, "chi": gonio.chi.name, "tth": gonio.tth.name,
                             "lens_x": lens.x.name, "lens_y": lens.y.name, "lens_z": lens.z.name,
                             "lens_pitch": lens.pitch.name, "lens_yaw": lens.yaw.name}},
        "geometry": geom_md,
        "reflection": {**geom_md["reflection"], "bragg_angle_deg": geom_md["derived"]["bragg_angle_deg"]},
        "fp": {"min_overlap": overlap_min, "worst_overlap": worst,
               "pupil_radius_rad": 2 * geom.objective.na_rms_rad,
               "step_rad": sets.step_px * geom.angle_per_freq_px_rad,
               "max_shift_rad": float(np.abs(sets.shifts_rad).max()),
               "synthetic_na_rad": 2 * geom.objective.na_rms_rad + float(np.hypot(*sets.shifts_rad.T).max())},
        "sample": sample_md,
    }, md)

    yield from bps.configure(camera, {"exposure_s": exposure})
    # list_scan adds plan_pattern = "inner_list_product" with the five motors' targets; per setting it
    # checkpoints, moves what changed and reads the camera, the other lens axes, the monitors and the motors.
    args: list[Any] = []
    for motor, values, _ in targets:
        args += [motor, values.tolist()]
    return (yield from bp.list_scan([camera, lens.x, lens.pitch, lens.yaw, *monitors], *args, md=_md))
