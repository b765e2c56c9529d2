"""Bragg ptychography: raster × rocking-curve scan (start document: docs/start-document.md)."""


from collections.abc import Mapping, Sequence
from typing import Any, Literal

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import numpy as np
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from analysis.geometry import BraggGeometry
from plans._common import (
    START_SCHEMA_VERSION,
    as_angles_deg,
    as_geometry,
    as_positions_um,
    check_exposure,
    check_geometry_angles,
    check_sample,
    check_within_limits,
    merge_md,
    names,
)
from plans._protocols import AreaDetector, RockingGoniometer, XYStage, check_axes, check_detector
from plans.patterns import RASTER_ROCKING_ORDERS, raster_rocking_cycler

ORDERS = RASTER_ROCKING_ORDERS


def raster_rocking_scan(detector: AreaDetector, stage: XYStage, gonio: RockingGoniometer, *,
                        geometry: BraggGeometry | Mapping[str, Any],
                        positions_um: Sequence[Sequence[float]] | np.ndarray, angles_deg: Sequence[float] | np.ndarray,
                        sample: Mapping[str, Any], exposure_s: float,
                        order: Literal["angle_outer", "raster_outer"] = "angle_outer",
                        monitors: Sequence[Readable] = (), md: Mapping[str, Any] | None = None
                        ) -> MsgGenerator[str]:
    """Take one frame at every (x, y) position × goniometer angle (absolute ``theta``, deg).

    ``order="angle_outer"`` scans the whole raster at each angle; ``"raster_outer"`` rocks at
    each position. The detector arm is moved to 2θ_B first. Everything needed to rebuild the
    trajectory and the reconstruction grid goes in the start document. All inputs are
    validated (ValueError/TypeError) before anything moves.
    """
    check_detector(detector)
    check_axes(stage, "stage", ("x", "y"))
    check_axes(gonio, "goniometer", ("theta", "tth"))
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    geom = as_geometry(geometry)
    pos = as_positions_um(positions_um)
    ang = as_angles_deg(angles_deg)
    check_geometry_angles(geom, ang)
    sample_md = check_sample(sample)
    exposure = check_exposure(exposure_s)
    check_within_limits(stage.x, pos[:, 0], "positions_um x")
    check_within_limits(stage.y, pos[:, 1], "positions_um y")
    check_within_limits(gonio.theta, ang, "angles_deg")
    tth_deg = 2 * geom.theta_bragg_deg
    check_within_limits(gonio.tth, np.array([tth_deg]), "detector arm 2θ_B")

    n_pos, n_ang = len(pos), len(ang)
    trajectory = raster_rocking_cycler(stage.x, stage.y, gonio.theta, positions_um=pos, angles_deg=ang, order=order)
    angle_dim = ([gonio.theta.name], "primary")
    raster_dim = ([stage.x.name, stage.y.name], "primary")
    angle_extent = [float(ang[0]), float(ang[-1])]
    raster_extent = [float(pos[:, 0].min()), float(pos[:, 0].max())]   # of x, the raster dimension's first field
    if order == "angle_outer":
        shape, dimensions, extents = [n_ang, n_pos], [angle_dim, raster_dim], [angle_extent, raster_extent]
    else:
        shape, dimensions, extents = [n_pos, n_ang], [raster_dim, angle_dim], [raster_extent, angle_extent]
    motors = [stage.x, stage.y, gonio.theta]
    _md = {
        "pxm_schema": START_SCHEMA_VERSION,
        "plan_name": "raster_rocking_scan",
        "plan_args": {"detector": repr(detector), "stage": repr(stage), "gonio": repr(gonio),
                      "order": order, "exposure_s": exposure, "n_positions": n_pos, "n_angles": n_ang,
                      "monitors": names(monitors)},
        "detectors": [detector.name],
        "motors": names(motors),
        "num_points": n_pos * n_ang,
        "num_intervals": n_pos * n_ang - 1,
        "shape": shape,
        "extents": extents,
        "exposure_s": exposure,
        "hints": {"dimensions": dimensions},
        "plan_pattern": "raster_rocking_cycler",
        "plan_pattern_module": "plans.patterns",
        "plan_pattern_args": {"x": stage.x.name, "y": stage.y.name, "theta": gonio.theta.name,
                              "positions_um": pos.tolist(), "angles_deg": ang.tolist(), "order": order},
        "pattern": {
            "kind": "raster_rocking",
            "order": order,
            "positions_um": pos.tolist(),
            "angles_deg": ang.tolist(),
            "rocking_offsets_deg": (ang - geom.theta_bragg_deg).tolist(),
            "detector_arm_deg": tth_deg,
            "axes": {"x": stage.x.name, "y": stage.y.name, "theta": gonio.theta.name, "tth": gonio.tth.name},
            "units": {"positions": "um", "angles": "deg"},
        },
        "geometry": geom.to_metadata(),
        "sample": sample_md,
    }
    _md = merge_md(_md, md)

    yield from bps.configure(detector, {"exposure_s": exposure})
    yield from bps.mv(gonio.tth, tth_deg)
    # scan_nd stages the detector around the run and, per point, checkpoints, moves what changed and
    # reads the detector, the arm, the monitors and the three scan motors (bps.one_nd_step).
    return (yield from bp.scan_nd([detector, gonio.tth, *monitors], trajectory, md=_md))
