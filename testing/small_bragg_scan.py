"""The small Bragg scan of the Tiled and live-pipeline tests: 3 × 3 raster × 5 angles of 32² frames.

A flat, unstrained W(220) slab under the simulator's KB probe (8 keV), behind the simulated beamline's
devices, and the real raster × rocking-curve plan over it. The tests run the plan under their own RunEngine
(with or without the live engine, with or without an interrupt) and check what reaches Tiled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from analysis.geometry import BraggGeometry, DetectorLayout, Roi, seed_geometry
from devices.sim_beamline import make_sim_beamline
from plans import raster_positions_um, raster_rocking_scan, rocking_angles_deg

SMALL_SCAN_FRAME_PX = 32
"""Rows and columns of each frame of the small scan."""


def small_scan_geometry() -> BraggGeometry:
    """The seed's W(220) geometry cut to 32² frames and 5 rocking angles of 0.005°, U = 1."""
    return seed_geometry(n_rows_px=SMALL_SCAN_FRAME_PX, n_cols_px=SMALL_SCAN_FRAME_PX, n_angles=5,
                         rocking_step_deg=0.005, upsampling=1)


def small_bragg_scan_plan(raw_dir: Path, *, sample_name: str, seed: int,
                          wrap_source: Callable[[Any], Any] | None = None,
                          order: Literal["angle_outer", "raster_outer"] = "angle_outer") -> Any:
    """The plan of a 3 × 3 × 5 Bragg scan of a flat unstrained slab, its detector files in ``raw_dir``.

    Parameters
    ----------
    raw_dir
        Folder of the detector's HDF5 files (created if missing; inside the Tiled server's readable storage).
    sample_name
        ``sample["name"]`` of the start document (tells the tests' runs apart).
    seed
        Seed of the simulated detector's Poisson noise.
    wrap_source
        Called with the :class:`sim.BraggSimulator`; the frame source it returns feeds the detector (e.g. a
        :class:`devices.testing.HookedFrameSource` that interrupts the scan). None: the simulator itself.
    order
        ``raster_rocking_scan``'s loop order.

    Returns
    -------
    generator
        The Bluesky plan (45 frames); run it with a RunEngine.
    """
    from sim import BraggSimulator, KBProbe, uniform_strain_sample

    geom = small_scan_geometry()
    layout = DetectorLayout()
    src = BraggSimulator(geom, uniform_strain_sample(strain=0.0), KBProbe(energy_kev=8.0), layout=layout,
                         flux_ph_per_s=1e9, background_ph_per_px_per_s=0.05)
    Path(raw_dir).mkdir(parents=True, exist_ok=True)
    bl = make_sim_beamline(src if wrap_source is None else wrap_source(src), geometry=geom, data_dir=Path(raw_dir),
                           roi=Roi.centred(layout, SMALL_SCAN_FRAME_PX, SMALL_SCAN_FRAME_PX), exposure_s=0.2,
                           simulate_exposure=False, seed=seed)
    angles = rocking_angles_deg(geom.theta_bragg_deg, geom.rocking_step_deg, geom.n_angles)
    return raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geom,
                               positions_um=raster_positions_um(3, 3, 0.1), angles_deg=angles,
                               sample={"name": sample_name, "material": "W"}, exposure_s=0.2, order=order)
