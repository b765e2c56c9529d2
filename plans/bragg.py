"""Bragg ptychography: raster × rocking-curve scan (start document: docs/start-document.md)."""


from collections.abc import Mapping, Sequence
from typing import Any, Literal

import bluesky.plan_stubs as bps
import numpy as np
import bluesky.preprocessors as bpp
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from analysis.geometry import BraggGeometry
from plans._common import (START_SCHEMA_VERSION, as_angles_deg, as_geometry, as_positions_um,
                           check_exposure, check_geometry_angles, check_sample, check_within_limits,
                           merge_md, names)
from plans._protocols import AreaDetector, RockingGoniometer, XYStage, check_axes, check_detector

ORDERS = ("angle_outer", "raster_outer")


def raster_rocking_scan(detector: AreaDetector, stage: XYStage, gonio: RockingGoniometer, *,
                        geometry: BraggGeometry | Mapping[str, Any],
                        positions_um: Sequence[Sequence[float]], angles_deg: Sequence[float],
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
    if order == "angle_outer":
        points = [(i, j) for j in range(n_ang) for i in range(n_pos)]
        shape = [n_ang, n_pos]
    else:
        points = [(i, j) for i in range(n_pos) for j in range(n_ang)]
        shape = [n_pos, n_ang]
    motors = [stage.x, stage.y, gonio.theta]
    readables = [detector, stage.x, stage.y, gonio.theta, gonio.tth, *monitors]
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
        "exposure_s": exposure,
        "hints": {"dimensions": [([gonio.theta.name], "primary"), ([stage.x.name, stage.y.name], "primary")]},
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

    @bpp.stage_decorator([detector])
    @bpp.run_decorator(md=_md)
    def inner() -> MsgGenerator[None]:
        yield from bps.mv(gonio.tth, tth_deg)
        for i, j in points:
            yield from bps.checkpoint()
            yield from bps.mv(stage.x, float(pos[i, 0]), stage.y, float(pos[i, 1]), gonio.theta, float(ang[j]))
            yield from bps.trigger_and_read(readables)

    yield from bps.configure(detector, {"exposure_s": exposure})
    return (yield from inner())
