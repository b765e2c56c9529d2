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
    each position. The detector arm is moved to 2θ_B first; in a general geometry
    (``geometry.diffractometer``, docs/geometry.md) ``angles_deg`` are those of the rocking circle the
    diffractometer names (η or φ), and its detector arms (ν, δ) and other sample circles are moved to their
    angles first; ``start["diffractometer_angles"]`` records what was set and read back. Everything needed to
    rebuild the trajectory and the reconstruction grid goes in the start document. All inputs are
    validated (ValueError/TypeError) before anything moves.
    """
    check_detector(detector)
    check_axes(stage, "stage", ("x", "y"))
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    geom = as_geometry(geometry)
    # the circles to drive: θ and the 2θ arm, or those a general Diffractometer names (docs/geometry.md)
    rocking_name, arm_deg, fixed_deg = _circles(geom)
    check_axes(gonio, "goniometer", (rocking_name, *arm_deg, *fixed_deg))
    rocking = getattr(gonio, rocking_name)
    set_deg = {**fixed_deg, **arm_deg}
    pos = as_positions_um(positions_um)
    ang = as_angles_deg(angles_deg)
    check_geometry_angles(geom, ang)
    if ang.size < 2:
        raise ValueError("angles_deg: one rocking angle gives a 2D projection with no third dimension and no "
                         "strain; a Bragg-ptychography scan needs a rocking curve: use at least 2 angles "
                         "(plans.patterns.rocking_angles_deg, n_angles >= 2; in practice a range of twice the "
                         "probe's convergence)")
    sample_md = check_sample(sample)
    exposure = check_exposure(exposure_s)
    merge_md({}, md)   # a bad md fails here, before anything moves
    check_within_limits(stage.x, pos[:, 0], "positions_um x")
    check_within_limits(stage.y, pos[:, 1], "positions_um y")
    check_within_limits(rocking, ang, "angles_deg")
    for circle, value in set_deg.items():
        check_within_limits(getattr(gonio, circle), np.array([value]),
                            "detector arm 2θ_B" if circle == "tth" else f"diffractometer circle {circle}")

    n_pos, n_ang = len(pos), len(ang)
    trajectory = raster_rocking_cycler(stage.x, stage.y, rocking, positions_um=pos, angles_deg=ang, order=order)
    angle_dim = ([rocking.name], "primary")
    raster_dim = ([stage.x.name, stage.y.name], "primary")
    angle_extent = [float(ang[0]), float(ang[-1])]
    raster_extent = [float(pos[:, 0].min()), float(pos[:, 0].max())]   # of x, the raster dimension's first field
    if order == "angle_outer":
        shape, dimensions, extents = [n_ang, n_pos], [angle_dim, raster_dim], [angle_extent, raster_extent]
    else:
        shape, dimensions, extents = [n_pos, n_ang], [raster_dim, angle_dim], [raster_extent, angle_extent]
    motors = [stage.x, stage.y, rocking]
    held = [getattr(gonio, c) for c in set_deg]        # arms and fixed circles: moved once, read at every point

    yield from bps.configure(detector, {"exposure_s": exposure})
    if set_deg:
        yield from bps.mv(*[a for c, v in set_deg.items() for a in (getattr(gonio, c), v)])
    read_deg = {}
    for c in (rocking_name, *set_deg):
        value = yield from bps.rd(getattr(gonio, c))
        read_deg[c] = float(value)
    tth_deg = arm_deg.get("tth")
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
        "plan_pattern_args": {"x": stage.x.name, "y": stage.y.name, "theta": rocking.name,
                              "positions_um": pos.tolist(), "angles_deg": ang.tolist(), "order": order},
        "pattern": {
            "kind": "raster_rocking",
            "order": order,
            "positions_um": pos.tolist(),
            "angles_deg": ang.tolist(),
            "rocking_offsets_deg": (ang - geom.rocking_centre_deg).tolist(),   # from θ_B, or η/φ (docs/geometry.md)
            "detector_arm_deg": tth_deg if tth_deg is not None else arm_deg,
            "axes": {"x": stage.x.name, "y": stage.y.name, "theta": rocking.name,
                     **{c: getattr(gonio, c).name for c in set_deg}},
            "units": {"positions": "um", "angles": "deg"},
        },
        "diffractometer_angles": {
            "rocking_circle": rocking_name,
            "rocking_centre_deg": geom.rocking_centre_deg,
            "set_deg": set_deg,
            "read_deg": read_deg,
            "axes": {c: getattr(gonio, c).name for c in (rocking_name, *set_deg)},
        },
        "geometry": geom.to_metadata(),
        "sample": sample_md,
    }
    _md = merge_md(_md, md)

    # scan_nd stages the detector around the run and, per point, checkpoints, moves what changed and
    # reads the detector, the arms and fixed circles, the monitors and the three scan motors (bps.one_nd_step).
    return (yield from bp.scan_nd([detector, *held, *monitors], trajectory, md=_md))


def _circles(geom: BraggGeometry) -> tuple[str, dict[str, float], dict[str, float]]:
    """(rocking motor, detector arms {name: deg}, fixed sample circles {name: deg}) the scan drives.

    Symmetric geometry: ``theta`` rocks about θ_B and the arm ``tth`` goes to 2θ_B. A general diffractometer
    (``geom.diffractometer``): the circles of :meth:`analysis.diffractometer.Diffractometer.circle_names`,
    e.g. ``eta`` rocks, ``phi`` stays at its angle, ``nu`` and ``delta`` go to theirs.
    """
    if geom.diffractometer is None:
        return "theta", {"tth": 2 * geom.theta_bragg_deg}, {}
    from analysis.diffractometer import Diffractometer  # xrayutilities: only for a general geometry

    d = Diffractometer.from_metadata(geom.diffractometer)
    sample, det = d.circle_names()
    fixed = {n: float(a) for i, (n, a) in enumerate(zip(sample, d.sample_angles_deg, strict=True))
             if i != d.rocking_circle}
    return sample[d.rocking_circle], dict(zip(det, (float(a) for a in d.detector_angles_deg), strict=True)), fixed
