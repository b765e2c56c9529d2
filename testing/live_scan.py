"""The small live-pipeline scan shared by the live tests (in-process RunEngine, 0MQ and NATS transports).

A 3 × 3 raster × 5 angles Bragg scan of a uniformly strained slab on the simulated beamline, 32 × 32 px, U = 1
(the engine's sampling check passes), and the check that a run's final live result is in ``/processed``,
found by query, with the raw run untouched.
"""

from __future__ import annotations

from typing import Any

from tiled.queries import Key

from analysis.geometry import BraggGeometry, DetectorLayout, Roi, seed_geometry

LIVE_SAMPLE = {"name": "W-live-test", "material": "W"}
"""The sample record of the live tests' scans."""

LIVE_N_EPIE = 6
"""ePIE sweeps of the live tests' short recipe."""

__all__ = ["LIVE_N_EPIE", "LIVE_SAMPLE", "check_final_result", "final_result_node", "live_geometry",
           "live_plan", "live_sim_source"]


def live_geometry() -> BraggGeometry:
    """Seed W(220) geometry cut to 32 × 32 px and 5 angles of 0.005°, U = 1."""
    return seed_geometry(n_rows_px=32, n_cols_px=32, n_angles=5, rocking_step_deg=0.005, upsampling=1)


def live_sim_source(geom: BraggGeometry, strain: float = 0.0) -> tuple[Any, Roi]:
    """The physics simulator of a uniformly strained foil under the KB probe, and its centred 32 × 32 ROI."""
    from sim import BraggSimulator, KBProbe, uniform_strain_sample

    layout = DetectorLayout()
    return BraggSimulator(geom, uniform_strain_sample(strain=strain), KBProbe(energy_kev=8.0), layout=layout,
                          flux_ph_per_s=1e9, background_ph_per_px_per_s=0.05), Roi.centred(layout, 32, 32)


def live_plan(beamline: Any, geom: BraggGeometry, order: str = "angle_outer", n: int = 3) -> Any:
    """The n × n raster (0.1 µm) × ``geom.n_angles`` rocking scan plan on ``beamline`` (a simulated beamline)."""
    from plans import raster_positions_um, raster_rocking_scan, rocking_angles_deg

    positions = raster_positions_um(n, n, 0.1)
    angles = rocking_angles_deg(geom.theta_bragg_deg, geom.rocking_step_deg, geom.n_angles)
    return raster_rocking_scan(beamline.detector, beamline.stage, beamline.gonio, geometry=geom,
                               positions_um=positions, angles_deg=angles, sample=LIVE_SAMPLE, exposure_s=0.2,
                               order=order)


def final_result_node(processed: Any, uid: str) -> Any:
    """The last complete final result of run ``uid`` in ``processed`` (AssertionError when there is none)."""
    nodes = [processed[k] for k in processed.search(Key("raw_uid") == uid)
             if processed[k].metadata.get("status") == "complete" and "object" in processed[k]]
    assert len(nodes) >= 1, f"no complete final result of run {uid} in /processed"
    return nodes[-1]


def check_final_result(processed: Any, raw: Any, uid: str) -> Any:
    """Assert that run ``uid`` has a complete live final result found by ``raw_uid`` and that the raw run's
    metadata is untouched; return the result's node.
    """
    from pxm.publication import find_results

    node = final_result_node(processed, uid)
    md = node.metadata
    assert md["raw_uid"] == uid and md["status"] == "complete" and md["live"] is True
    assert "analysis" not in raw[uid].metadata                        # raw run untouched: found by raw_uid
    assert node.item["id"] in find_results(processed, uid)
    return node
