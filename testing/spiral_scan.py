"""The demo's Siemens-star spiral on the simulated forward beamline, shared by the probe tests.

The forward-ptychography beamline of ``pxm demo`` (its KB probe on a Siemens star, 64 × 64 px frames, detector
seed 3) and the plan of a ``n_points`` Fermat spiral of 0.1 µm step: what ``pxm probe``, ``pxm.probe``,
``pxm reconstruct --probe-run`` and their figures and partial-run refusals are tested on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.geometry import BraggGeometry

SPIRAL_SAMPLE = {"name": "Siemens star (simulated)"}
"""The sample record of the spiral runs."""

__all__ = ["SPIRAL_SAMPLE", "spiral_beamline", "spiral_plan"]


def spiral_beamline(data_dir: Path) -> tuple[Any, BraggGeometry]:
    """The simulated forward beamline of the demo's spiral writing its detector files under ``data_dir``, and
    the demo's geometry (energy and detector distance of the spiral).
    """
    from analysis.geometry import DetectorLayout, Roi
    from devices.sim_beamline import make_sim_beamline
    from pxm.demo import DemoOptions, demo_geometry, demo_probe
    from sim import SiemensStar, TransmissionSimulator

    opts = DemoOptions()
    geom = demo_geometry(opts)
    layout = DetectorLayout()
    sim = TransmissionSimulator(demo_probe(opts, geom.energy_kev), SiemensStar(energy_kev=geom.energy_kev),
                                energy_kev=geom.energy_kev, detector_distance_m=geom.detector_distance_m,
                                layout=layout, flux_ph_per_s=opts.flux_ph_per_s)
    fwd = make_sim_beamline(sim, geometry=geom, data_dir=data_dir, roi=Roi.centred(layout, 64, 64), exposure_s=1.0,
                            simulate_exposure=False, seed=3, prefix="fwd_")
    return fwd, geom


def spiral_plan(fwd: Any, geom: BraggGeometry, n_points: int = 12) -> Any:
    """The ``spiral_probe_scan`` plan of ``n_points`` at 0.1 µm step, 1 s exposures, on ``fwd``."""
    from plans import spiral_probe_scan

    return spiral_probe_scan(fwd.detector, fwd.stage, n_points=n_points, step_um=0.1, exposure_s=1.0,
                             energy_kev=geom.energy_kev, detector_distance_m=geom.detector_distance_m,
                             sample=SPIRAL_SAMPLE)
