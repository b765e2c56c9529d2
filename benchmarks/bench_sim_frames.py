"""Frames/s of sim.BraggSimulator (seed phantom): a 5×5×9 scan at 64×64, then 200×160 and full 516².

Plain script: ``.venv/bin/python benchmarks/bench_sim_frames.py``. The first frame of a
sampling builds the cached sample (reported separately).
"""

import time

import numpy as np

from analysis.geometry import DetectorLayout, Roi, seed_geometry
from sim import BraggSimulator, KBProbe, seed_sample


def run(sim: BraggSimulator, roi: Roi | None, positions, angles, label: str) -> None:
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    sim.frame(stage_xyz_m=positions[0], rocking_offset_deg=angles[0], detector_arm_offset_deg=0.0,
              exposure_s=0.2, flux_scale=1.0, roi=roi, rng=rng)
    t1 = time.perf_counter()
    n = 0
    for a in angles:
        for p in positions:
            sim.frame(stage_xyz_m=p, rocking_offset_deg=a, detector_arm_offset_deg=0.0,
                      exposure_s=0.2, flux_scale=1.0, roi=roi, rng=rng)
            n += 1
    t2 = time.perf_counter()
    print(f"{label}: first frame (builds cache) {t1 - t0:.2f} s; then {n / (t2 - t1):.2f} frames/s "
          f"({1e3 * (t2 - t1) / n:.1f} ms/frame over {n} frames)")


def main() -> None:
    geom = seed_geometry()
    layout = DetectorLayout()
    smp, probe = seed_sample(), KBProbe()
    grid = [(x, y, 0.0) for x in np.arange(-2, 3) * 100e-9 for y in np.arange(-2, 3) * 100e-9]
    angles = 0.012 + (np.arange(9) - 4) * 0.005
    run(BraggSimulator(geom, smp, probe, layout=layout, flux_ph_per_s=1e9, max_step_m=None),
        Roi.centred(layout, 64, 64), grid, angles, "64×64 ROI, 5×5×9 scan, os 2")
    run(BraggSimulator(geom, smp, probe, layout=layout, flux_ph_per_s=1e9),
        Roi.centred(layout, 64, 64), grid, angles, "64×64 ROI, 5×5×9 scan, max step 20 nm")
    run(BraggSimulator(geom, smp, probe, layout=layout, flux_ph_per_s=1e9, cache_bytes=2 ** 31),
        Roi.centred(layout, 200, 160), grid[:5], angles[:2], "200×160 ROI")
    run(BraggSimulator(geom, smp, probe, layout=layout, flux_ph_per_s=1e9, cache_bytes=2 ** 31),
        None, grid[:2], angles[:1], "full 516×516")


if __name__ == "__main__":
    main()
