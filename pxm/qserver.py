"""bluesky-queueserver wiring: the namespace (plans, devices, RunEngine) a RE Manager worker loads.

Start a manager with ``start-re-manager --startup-module pxm.qserver_startup``; the module
reads ``PXM_DATA_DIR``, ``PXM_TILED_URI`` and ``PXM_TILED_API_KEY`` from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import plans
from analysis.geometry import DetectorLayout, Roi, seed_geometry


def build_namespace(*, data_dir: Path, tiled_uri: str | None = None, api_key: str | None = None,
                    roi_px: tuple[int, int] = (64, 64)) -> dict[str, Any]:
    """Plans, simulated devices (``mpx``, ``stage``, ``gonio``, ``ring``) and, with Tiled, a wired ``RE``.

    A beamline replaces the simulated devices here by its EPICS classes
    (``devices.motion.Goniometer``, ``PiezoStage``, ``devices.beam.BeamMonitor``).
    """
    from devices.sim_beamline import make_sim_beamline
    from sim import BraggSimulator, KBProbe, seed_sample

    geom = seed_geometry(n_rows_px=roi_px[0], n_cols_px=roi_px[1], n_angles=9)
    layout = DetectorLayout()
    source = BraggSimulator(geom, seed_sample(), KBProbe(energy_kev=geom.energy_kev), layout=layout)
    bl = make_sim_beamline(source, geometry=geom, data_dir=Path(data_dir) / "raw",
                           roi=Roi.centred(layout, *roi_px), simulate_exposure=False)
    ns: dict[str, Any] = {name: getattr(plans, name) for name in plans.QSERVER_PLANS}
    ns.update(mpx=bl.detector, stage=bl.stage, gonio=bl.gonio, ring=bl.monitor, geometry=geom.to_metadata())
    if tiled_uri:
        from pxm.catalog import connect, ensure_layout
        from pxm.runengine import make_run_engine

        if not api_key:
            raise ValueError("PXM_TILED_URI is set but PXM_TILED_API_KEY is not; the RE Manager needs both")
        raw, _ = ensure_layout(connect(tiled_uri, api_key))
        ns["RE"] = make_run_engine(raw_catalog=raw, documents_dir=Path(data_dir) / "documents",
                                   beam_signal=bl.monitor.current).RE
    return ns


def namespace_from_env() -> dict[str, Any]:
    """:func:`build_namespace` configured from ``PXM_DATA_DIR``, ``PXM_TILED_URI``, ``PXM_TILED_API_KEY``."""
    return build_namespace(data_dir=Path(os.environ.get("PXM_DATA_DIR", "pxm-data")),
                           tiled_uri=os.environ.get("PXM_TILED_URI"),
                           api_key=os.environ.get("PXM_TILED_API_KEY"))
