"""Forward (transmission) ptychography: Archimedean-spiral probe scan."""


import math
from collections.abc import Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.plans as bp
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from plans._common import START_SCHEMA_VERSION, check_exposure, check_sample, check_within_limits, merge_md, names
from plans._protocols import AreaDetector, XYStage, check_axes, check_detector
from plans.patterns import archimedean_spiral_um


def spiral_probe_scan(detector: AreaDetector, stage: XYStage, *, n_points: int, step_um: float,
                      exposure_s: float, energy_kev: float, detector_distance_m: float,
                      sample: Mapping[str, Any], centre_um: tuple[float, float] = (0.0, 0.0),
                      monitors: Sequence[Readable] = (), md: Mapping[str, Any] | None = None
                      ) -> MsgGenerator[str]:
    """Take one transmission frame at each of ``n_points`` Archimedean-spiral positions (µm).

    Positions come from :func:`plans.patterns.archimedean_spiral_um` and are recorded in the
    start document (``pattern``) with the transmission geometry (``geometry``).
    """
    check_detector(detector)
    check_axes(stage, "stage", ("x", "y"))
    pos = archimedean_spiral_um(n_points, step_um, centre_um=centre_um)
    exposure = check_exposure(exposure_s)
    for name, v in (("energy_kev", energy_kev), ("detector_distance_m", detector_distance_m)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    sample_md = check_sample(sample)
    check_within_limits(stage.x, pos[:, 0], "spiral x")
    check_within_limits(stage.y, pos[:, 1], "spiral y")
    _md = merge_md({
        "pxm_schema": START_SCHEMA_VERSION,
        "plan_name": "spiral_probe_scan",
        "plan_args": {"detector": repr(detector), "stage": repr(stage), "n_points": n_points,
                      "step_um": step_um, "exposure_s": exposure, "centre_um": list(centre_um),
                      "monitors": names(monitors)},
        "detectors": [detector.name],
        "motors": [stage.x.name, stage.y.name],
        "num_points": len(pos),
        "num_intervals": len(pos) - 1,
        "shape": [len(pos)],
        "extents": [[float(pos[:, 0].min()), float(pos[:, 0].max())], [float(pos[:, 1].min()), float(pos[:, 1].max())]],
        "exposure_s": exposure,
        "hints": {"dimensions": [([stage.x.name], "primary"), ([stage.y.name], "primary")]},   # as bp.spiral
        "pattern": {"kind": "archimedean_spiral", "step_um": float(step_um), "centre_um": list(centre_um),
                    "positions_um": pos.tolist(), "axes": {"x": stage.x.name, "y": stage.y.name},
                    "units": {"positions": "um"}},
        "geometry": {"kind": "transmission", "energy_kev": float(energy_kev),
                     "detector_distance_m": float(detector_distance_m)},
        "sample": sample_md,
    }, md)

    yield from bps.configure(detector, {"exposure_s": exposure})
    # list_scan adds plan_pattern = "inner_list_product" with the positions; per point it checkpoints,
    # moves x and y and reads the detector, the monitors and both axes (bps.one_nd_step).
    return (yield from bp.list_scan([detector, *monitors], stage.x, pos[:, 0].tolist(), stage.y,
                                    pos[:, 1].tolist(), md=_md))
