"""Frames/s of sim.BraggSimulator (seed phantom) at 64×64, 200×160 and the full 516×516 frame.

Plain script: ``.venv/bin/python benchmarks/bench_sim_frames.py [--quick]``. For each size
the first frame (which fills the cached sample ρ for the probed region) is timed on its
own; the rate is then measured over a raster × rocking scan like the demo's, which
still fills new cache tiles as the probe moves onto fresh sample. The 200×160 case
scans the seed's full 20×20 raster (100 nm step) at one angle, with the demo's
default ``cache_bytes``. ``--quick`` shortens the scans.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass

import numpy as np

from analysis.geometry import DetectorLayout, Roi, seed_geometry
from sim import BraggSimulator, KBProbe, seed_sample


@dataclass(frozen=True)
class FrameTiming:
    """Result of one benchmark case."""

    label: str
    first_frame_s: float
    n_frames: int
    scan_s: float

    @property
    def ms_per_frame(self) -> float:
        """Mean wall time per frame after the first (ms)."""
        return 1e3 * self.scan_s / self.n_frames


def raster_m(n: int, step_m: float = 100e-9) -> list[tuple[float, float, float]]:
    """n × n raster of stage positions (x, y, 0) in metres, centred on 0."""
    c = (np.arange(n) - (n - 1) / 2) * step_m
    return [(float(x), float(y), 0.0) for x in c for y in c]


def time_frames(sim: BraggSimulator, roi: Roi | None, positions: list[tuple[float, float, float]],
                angles_deg: np.ndarray, label: str) -> FrameTiming:
    """Time the first frame, then every (angle, position) frame of the scan."""
    rng = np.random.default_rng(0)
    kw = dict(detector_arm_offset_deg=0.0, exposure_s=0.2, flux_scale=1.0, roi=roi, rng=rng)
    t0 = time.perf_counter()
    sim.frame(stage_xyz_m=positions[0], rocking_offset_deg=float(angles_deg[0]), **kw)
    t1 = time.perf_counter()
    n = 0
    for a in angles_deg:
        for p in positions:
            sim.frame(stage_xyz_m=p, rocking_offset_deg=float(a), **kw)
            n += 1
    t2 = time.perf_counter()
    res = FrameTiming(label=label, first_frame_s=t1 - t0, n_frames=n, scan_s=t2 - t1)
    print(f"{label:44s} first frame {res.first_frame_s:7.2f} s | {n:4d} frames: "
          f"{n / res.scan_s:7.2f} frames/s ({res.ms_per_frame:8.1f} ms/frame)", flush=True)
    return res


def main() -> None:
    """Run the three cases and print a summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter scans")
    args = ap.parse_args()
    geom = seed_geometry()
    layout = DetectorLayout()
    smp, probe = seed_sample(), KBProbe()
    angles = 0.012 + (np.arange(9) - 4) * 0.005
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    time_frames(BraggSimulator(geom, smp, probe, layout=layout),
                Roi.centred(layout, 64, 64), raster_m(5), angles[:3] if args.quick else angles,
                "64×64 ROI, 5×5×9 scan")
    time_frames(BraggSimulator(geom, smp, probe, layout=layout),
                Roi.centred(layout, 200, 160), raster_m(8 if args.quick else 20), angles[:1],
                f"200×160 ROI, {8 if args.quick else 20}² raster × 1 angle")
    time_frames(BraggSimulator(geom, smp, probe, layout=layout, cache_bytes=2 ** 31),
                None, raster_m(2), angles[:1] if args.quick else angles[:2],
                "full 516×516, 2×2 raster, cache 2 GiB")


if __name__ == "__main__":
    main()
