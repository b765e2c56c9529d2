"""Convergence basin of the joint probe retrieval (seed Methods, Supplementary Fig. 2) on simulator data.

Same problem and scoring as ``bench_seed_schedule.py`` (seed-like slab, Poisson, NA mask 1.5 × the
true NA (6e-4, 6e-4)), schedule ``scaled_recipe(seed_recipe(), n_epie_iterations=N, n_ml_iterations=M)``
(default 200 + 40: slab 0.5/0.7/0.9 µm from sweeps 0/20/40, shrink-wrap every sweep in 60–100,
probe frozen for 1 sweep). Starts of P2:

* ``gaussian``: flat-phase Gaussians of σ = 30 … 180 nm (:func:`testing.bragg_sim.gaussian_p2`);
* ``na``: the aberration-free focus of a rectangular NA with flat pupil phase
  (:func:`analysis.bragg.probe_init.model_probe`), for NA = f × the true NA, f = 0.5 … 1.5 (an NA estimated
  f times too small gives a lobe 1/f times too wide).

Each start is labelled by the RMS radius of its |P2|² lobe in the beam plane relative to the true
probe's (:func:`lobe_rms_radius_m`), and scored by E_P and E_ρ (lit crystal) after the ePIE phase and
after ML. Run: ``PYTHONPATH=. nice -n 19 .venv/bin/python benchmarks/bench_probe_basin.py [--epie 200 --ml 40]``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from analysis.bragg.engine import scaled_recipe, seed_recipe
from analysis.bragg.probe_init import model_probe, p2_plane_coordinates_m
from analysis.geometry import BraggGeometry
from analysis.metrics import probe_error
from benchmarks.bench_seed_schedule import PROBE_NA_RAD, run
from testing.bragg_sim import gaussian_p2, seed_like_problem

GAUSSIAN_SIGMAS_M = (30e-9, 45e-9, 60e-9, 80e-9, 100e-9, 120e-9, 150e-9, 180e-9)
"""σ of the flat-phase Gaussian starts."""
NA_FACTORS = (0.5, 0.67, 0.8, 1.0, 1.25, 1.5)
"""NA of the model-probe starts in units of the true NA."""


def lobe_rms_radius_m(p2: np.ndarray, geometry: BraggGeometry) -> float:
    """RMS radius √(Σ|P|² (p1² + p2²) / Σ|P|²) of the central lobe of P2 in the beam plane (metres).

    Only the pixels with |P|² ≥ 10 % of the maximum that are connected to the maximum count, so that
    side lobes and the truncation ring do not dominate.
    """
    from scipy.ndimage import label

    p1_m, p2_m = p2_plane_coordinates_m(geometry)
    i = np.abs(p2) ** 2
    lab, _ = label(i >= 0.1 * i.max())
    lobe = lab == lab[np.unravel_index(np.argmax(i), i.shape)]
    w = np.where(lobe, i, 0.0)
    c1, c2 = (float((w * a).sum() / w.sum()) for a in (p1_m, p2_m))
    return float(np.sqrt((w * ((p1_m - c1) ** 2 + (p2_m - c2) ** 2)).sum() / w.sum()))


def main() -> None:
    """Scan the starts and print E_P / E_ρ before, after ePIE and after ML."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epie", type=int, default=200)
    ap.add_argument("--ml", type=int, default=40)
    ap.add_argument("--starts", nargs="+", default=["gaussian", "na"])
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    p = seed_like_problem(noise_seed=1)
    g = p.geometry
    recipe = scaled_recipe(seed_recipe(), n_epie_iterations=a.epie, n_ml_iterations=a.ml)
    r_true = lobe_rms_radius_m(p.probe_p2, g)
    print(f"true probe lobe RMS radius {r_true * 1e9:.1f} nm; schedule {a.epie} ePIE + {a.ml} ML", flush=True)
    starts: list[tuple[str, np.ndarray]] = []
    if "gaussian" in a.starts:
        starts += [(f"gaussian sigma {s * 1e9:.0f} nm", gaussian_p2(g, s)) for s in GAUSSIAN_SIGMAS_M]
    if "na" in a.starts:
        starts += [(f"NA model {f:.2f} x NA",
                    model_probe(g, na_v_rad=f * PROBE_NA_RAD[0], na_h_rad=f * PROBE_NA_RAD[1])) for f in NA_FACTORS]
    rows = ["| start | lobe radius / true | E_P start | E_P ePIE | E_ρ ePIE | E_P end | E_ρ end | strain RMSE end |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    out = []
    for label, p0 in starts:
        ratio = lobe_rms_radius_m(p0, g) / r_true
        e0 = probe_error(p0, p.probe_p2, intensity_weighted=True).error
        rep = run(p, recipe, p0, name=label, initial_probe_label=label,
                  checkpoints=(recipe.n_epie_iterations, recipe.n_iterations), verbose=False)
        ce, cm = rep.checkpoints[0].scores, rep.checkpoints[-1].scores
        rows.append(f"| {label} | {ratio:.2f} | {e0:.3f} | {ce.probe_error:.3f} | {ce.object_error:.3f} | "
                    f"{cm.probe_error:.3f} | {cm.object_error:.3f} | {cm.strain_rmse:.2e} |")
        print(rows[-1], flush=True)
        out.append({"start": label, "lobe_ratio": ratio, "e_p_start": e0, "epie": ce.__dict__, "end": cm.__dict__})
    print("\n".join(rows))
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
