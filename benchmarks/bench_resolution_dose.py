"""Half-data FSC resolution against the truth, over dose and schedule length
(issue 3, docs/dataset-format.md, Half-data resolution).

Problem: :func:`testing.bragg_sim.half_data_reconstructions` (0.3 µm implanted slab, small
geometry, 16 positions, known probe, fixed 0.4 µm support), Poisson noise at each ``--flux`` × 0.2 s,
binomial split, both halves reconstructed with ``--epie`` ePIE + ``--ml`` Poisson-ML sweeps.
Per dose: the ½-bit crossings of :func:`analysis.bragg.resolution.half_data_resolution` (all shells; ±20° cones
about z, y, x, each to its Nyquist frequency), the crossings of FSC(half A, truth) at √(½-bit)
(:func:`testing.bragg_sim.truth_fsc_crossings`: where a calibrated half-data FSC would
cross), E_ρ of each half against the truth and ‖A − B‖/‖A‖ between the halves, on the FSC mask.

Run: ``PYTHONPATH=. nice -n 19 .venv/bin/python benchmarks/bench_resolution_dose.py
[--flux 2e3 2e4 2e5 2e6] [--epie 40] [--ml 10]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from analysis.bragg.resolution import half_data_resolution
from analysis.metrics import object_error
from testing.bragg_sim import half_data_reconstructions, truth_fsc_crossings


def _nm(v: float, bound: float) -> str:
    return f"{v * 1e9:.0f}" if np.isfinite(v) else f"<{bound * 1e9:.0f}"


def main() -> None:
    """Run the benchmark (options on the command line) and print its results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flux", type=float, nargs="+", default=[2e3, 2e4, 2e5, 2e6])
    ap.add_argument("--epie", type=int, default=40)
    ap.add_argument("--ml", type=int, default=10)
    a = ap.parse_args()
    print(f"schedule {a.epie} ePIE + {a.ml} Poisson ML per half; crossings in nm (half-data ½-bit | truth √½-bit)")
    print("| photons/pixel | all shells | z | y | x | E_ρ A, B | ‖A−B‖/‖A‖ | s |")
    print("|---|---|---|---|---|---|---|---|")
    for flux in a.flux:
        t0 = time.perf_counter()
        p, recs = half_data_reconstructions(flux, n_epie=a.epie, n_ml=a.ml)
        est = half_data_resolution(recs[0], recs[1])
        ra, rb = recs[0].result(), recs[1].result()
        tru = p.truth_object(ra.object.shape, recs[0]._grid.origin_vox)
        truth = truth_fsc_crossings(p, recs[0], est, truth=tru)
        sup = est.mask > 0.5
        e_a = object_error(ra.object, tru, support=sup).error
        e_b = object_error(rb.object, tru, support=sup).error
        e_ab = object_error(rb.object, ra.object, support=sup).error
        curves = {"all": est.fsc, **est.fsc_directional}
        cells = " | ".join(f"{_nm(c.resolution, c.finest_period)} \\| {_nm(truth[k], c.finest_period)}"
                           for k, c in curves.items())
        print(f"| {p.frames.mean():.3f} | {cells} | {e_a:.3f}, {e_b:.3f} | {e_ab:.3f} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
