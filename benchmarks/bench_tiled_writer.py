"""Per-frame cost of writing a scan into Tiled: bare RunEngine vs TiledWriter at batch 1 and 25.

Frames come from the position-encoding test source (no physics), 64 × 64 px, 3 × 3 × 9 scan,
into a real `tiled serve` process on loopback.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bluesky import RunEngine

from analysis.geometry import BraggGeometry
from devices.sim_beamline import make_sim_beamline
from devices.testing import EncodingFrameSource
from plans import raster_positions_um, raster_rocking_scan, rocking_angles_deg
from pxm.catalog import TiledServerConfig, TiledService, ensure_layout
from pxm.runengine import make_run_engine


def main() -> None:
    """Print ms/frame for each configuration."""
    g = BraggGeometry(energy_kev=8.0, d_spacing_m=1.119e-10, detector_distance_m=1.4, n_rows_px=64,
                      n_cols_px=64, n_angles=9, rocking_step_deg=0.005, bragg_angle_deg=43.9)
    d = Path(tempfile.mkdtemp())
    cfg = TiledServerConfig(data_dir=d, api_key="benchkey")
    n_frames = 81

    def plan(bl):
        return raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=g,
                                   positions_um=raster_positions_um(3, 3, 0.1),
                                   angles_deg=rocking_angles_deg(g.theta_bragg_deg, 0.005, 9),
                                   sample={"name": "bench"}, exposure_s=0.001, monitors=[bl.monitor])

    with TiledService(cfg) as service:
        raw, _ = ensure_layout(service.client())
        bl = make_sim_beamline(EncodingFrameSource((64, 64)), geometry=g, data_dir=cfg.raw_path,
                               exposure_s=0.001, simulate_exposure=False)
        t0 = time.perf_counter()
        RunEngine({})(plan(bl))
        print(f"bare RunEngine + HDF5: {(time.perf_counter() - t0) / n_frames * 1e3:.1f} ms/frame")
        for batch in (1, 25):
            w = make_run_engine(raw_catalog=raw, documents_dir=d / f"docs{batch}", tiled_batch_size=batch)
            t0 = time.perf_counter()
            w.RE(plan(bl))
            print(f"+ TiledWriter(batch {batch}) + JSONL: {(time.perf_counter() - t0) / n_frames * 1e3:.1f} ms/frame")


if __name__ == "__main__":
    main()
