"""Live pipeline benchmark (issue 4): ingest rate, layer → preview delay, scan end → final result.

1. Ingest: synthetic documents for N frames of 200 × 160 uint32 in an HDF5 file go through
   :class:`pxm.live.LiveReconstructionCallback` with the engine off (``reconstruct_live=False``,
   ``final=False``); frames/s = N / (time until the worker has placed every frame). Also the
   largest time of one document call.
2. Delays: a small simulated scan (3 × 3 raster, 5 angles, 32 × 32 px, seed geometry) under the
   RunEngine into a real Tiled server, angle-outer order: for each completed rocking-angle layer the
   time until a preview containing it is in Tiled, and the time from the stop document to the final
   result in Tiled.

Run: ``.venv/bin/python benchmarks/bench_live.py [--frames 2000]``; append the printed table to
docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np


def bench_ingest(n_frames: int, shape: tuple[int, int] = (200, 160)) -> dict[str, float]:
    """Frames/s ingested by the callback's worker with the engine off; max call time in ms."""
    import h5py

    from analysis.geometry import seed_geometry
    from pxm.live import LiveOptions, LiveReconstructionCallback

    n_ang = 42
    n_pos = -(-n_frames // n_ang)
    geom = seed_geometry(n_rows_px=shape[0], n_cols_px=shape[1], n_angles=n_ang)
    pos = np.stack(np.meshgrid(np.arange(n_pos) * 0.1, [0.0]), -1).reshape(-1, 2)[:n_pos]
    angles = geom.theta_bragg_deg + (np.arange(n_ang) - n_ang // 2) * geom.rocking_step_deg
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "frames.h5"
        rng = np.random.default_rng(0)
        with h5py.File(path, "w", libver="latest") as f:
            f.create_dataset("/entry/data/data", data=rng.poisson(1.0, (n_frames,) + shape).astype(np.uint32),
                             chunks=(1,) + shape)
        start = {"uid": uuid.uuid4().hex, "time": time.time(), "plan_name": "raster_rocking_scan",
                 "detectors": ["mpx"], "geometry": geom.to_metadata(),
                 "pattern": {"order": "angle_outer", "positions_um": pos.tolist(), "angles_deg": angles.tolist(),
                             "axes": {"x": "stage_x", "y": "stage_y", "theta": "gonio_theta"}}}
        desc = {"uid": "d1", "run_start": start["uid"], "name": "primary", "time": time.time(),
                "data_keys": {"mpx_image": {"external": "STREAM:", "shape": list(shape), "dtype": "array",
                                            "source": "sim"}}, "configuration": {}}
        res = {"uid": "r1", "uri": f"file://localhost{path}", "data_key": "mpx_image", "mimetype": "application/x-hdf5",
               "parameters": {"dataset": "/entry/data/data"}}
        cb = LiveReconstructionCallback(options=LiveOptions(reconstruct_live=False, final=False))
        t0 = time.perf_counter()
        cb("start", start)
        cb("descriptor", desc)
        cb("stream_resource", res)
        for k in range(n_frames):
            p, a = k % n_pos, k // n_pos
            cb("stream_datum", {"uid": f"sd{k}", "stream_resource": "r1", "descriptor": "d1",
                                "seq_nums": {"start": k + 1, "stop": k + 2}, "indices": {"start": k, "stop": k + 1}})
            cb("event", {"uid": f"e{k}", "descriptor": "d1", "seq_num": k + 1, "time": time.time(),
                         "data": {"stage_x": pos[p, 0], "stage_y": pos[p, 1], "gonio_theta": angles[a]},
                         "timestamps": {}, "filled": {}})
        t_docs = time.perf_counter() - t0
        cb("stop", {"uid": "s", "run_start": start["uid"], "time": time.time(), "exit_status": "success"})
        cb.wait(600)
        t_all = time.perf_counter() - t0
        assert cb.sessions[0].grid.n_measured == n_frames
    return {"frames": n_frames, "frames_per_s": n_frames / t_all, "docs_per_s": (2 * n_frames) / t_docs,
            "max_call_ms": 1e3 * max(cb.call_times_s), "mean_call_us": 1e6 * float(np.mean(cb.call_times_s))}


def bench_delays() -> dict[str, float]:
    """Layer → preview and stop → final delays of a small simulated scan into a real Tiled server."""
    from analysis.geometry import DetectorLayout, Roi, seed_geometry
    from devices.sim_beamline import make_sim_beamline
    from plans import raster_positions_um, raster_rocking_scan, rocking_angles_deg
    from pxm.catalog import TiledServerConfig, TiledService, ensure_layout
    from pxm.live import LiveOptions, LiveReconstructionCallback, live_recipe
    from pxm.runengine import make_run_engine
    from sim import BraggSimulator, KBProbe, uniform_strain_sample

    with tempfile.TemporaryDirectory() as d, TiledService(TiledServerConfig(data_dir=Path(d))) as svc:
        raw, processed = ensure_layout(svc.client())
        geom = seed_geometry(n_rows_px=32, n_cols_px=32, n_angles=5, rocking_step_deg=0.005, upsampling=1)
        layout = DetectorLayout()
        sim = BraggSimulator(geom, uniform_strain_sample(strain=1e-4), KBProbe(energy_kev=8.0), layout=layout,
                             flux_ph_per_s=1e9)
        bl = make_sim_beamline(sim, geometry=geom, data_dir=svc.config.raw_path, roi=Roi.centred(layout, 32, 32),
                               exposure_s=0.2, simulate_exposure=False)
        cb = LiveReconstructionCallback(processed=processed, raw=raw,
                                        options=LiveOptions(recipe=live_recipe(6), preview_interval_s=0.2,
                                                            start_fraction=0.2, min_angles=1, rebuild_growth=0.1))
        w = make_run_engine(raw_catalog=raw, documents_dir=Path(d) / "docs", extra_callbacks=(cb,))
        angles = rocking_angles_deg(geom.theta_bragg_deg, geom.rocking_step_deg, geom.n_angles)
        t0 = time.perf_counter()
        w.RE(raster_rocking_scan(bl.detector, bl.stage, bl.gonio, geometry=geom,
                                 positions_um=raster_positions_um(3, 3, 0.1), angles_deg=angles,
                                 sample={"name": "bench"}, exposure_s=0.2))
        t_scan = time.perf_counter() - t0
        (summary,) = cb.wait(300)
        delays = [v for v in cb.sessions[0].layer_preview_t.values() if v > 0]
        pt = np.asarray(cb.sessions[0].preview_times_s).reshape(-1, 2)
    return {"scan_s": t_scan, "layers_previewed": len(delays), "layer_preview_mean_s": float(np.mean(delays)),
            "layer_preview_max_s": float(np.max(delays)), "stop_to_final_s": float(summary["final_delay_s"]),
            "max_call_ms": 1e3 * max(cb.call_times_s), "n_previews": len(pt),
            "preview_compute_s": float(pt[:, 0].mean()), "preview_write_s": float(pt[:, 1].mean())}


def main() -> None:
    """Run both benchmarks and print a markdown table."""
    import os

    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=2000)
    args = ap.parse_args()
    ing = bench_ingest(args.frames)
    dl = bench_delays()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    print("| measurement | value |\n|---|---|")
    print(f"| ingest, {ing['frames']} frames of 200 × 160 (engine off) | {ing['frames_per_s']:.0f} frames/s |")
    print(f"| document calls: max / mean | {ing['max_call_ms']:.2f} ms / {ing['mean_call_us']:.1f} µs |")
    print(f"| scan 3 × 3 × 5, 32 × 32 px, in Tiled | {dl['scan_s']:.1f} s |")
    print(f"| end of rocking layer → preview in Tiled ({dl['layers_previewed']} layers): mean / max | "
          f"{dl['layer_preview_mean_s']:.2f} s / {dl['layer_preview_max_s']:.2f} s |")
    print(f"| one preview ({dl['n_previews']} written): compute / write to Tiled, mean | "
          f"{dl['preview_compute_s']:.2f} s / {dl['preview_write_s']:.2f} s |")
    print(f"| stop document → final result in Tiled (6 ePIE sweeps) | {dl['stop_to_final_s']:.2f} s |")
    print(f"| max document call during the scan (engine running in-process) | {dl['max_call_ms']:.2f} ms |")


if __name__ == "__main__":
    main()
