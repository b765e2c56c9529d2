"""Device traffic of the CuPy path at the seed's size, counted on CPU (issue 16): bytes, launches, host syncs.

The engine runs on the instrumented CuPy stand-in (``testing/gpu_traffic.py``: every kernel launch with
the bytes it reads and writes, cuFFT by its pass model, host↔device copies and syncs) at the seed's size:
42 angles, U = 3, 200 × 160 frames, box 294 × 160 × 126. Positions are corners of the seed's 20 × 20
raster (100 nm steps), so the object has the seed's full shape with a few positions; two runs (2 and 4
positions by default) separate what a sweep costs per position from what it costs once (the slope and
the intercept). Counted: one ePIE update (sequential, probe and background updated, NA mask on) and one
ML iteration, each the middle one of three (the first and last of a phase also compute R-factors; the
first ML iteration also sets up μ_j, the μ map and Ψ0, and runs the gradient pass that later iterations take
from the accepted Armijo trial's pass).

Projection: seconds = bytes / 3.35 TB/s + launches × 8 µs, no overlap, for the seed's schedule of
1000 ePIE sweeps + 500 ML iterations at 400 positions. Run:
``.venv/bin/python benchmarks/gpu_traffic.py [--positions 2,4] [--json F]`` (default JSON
``benchmarks/gpu_traffic.json``, read by ``benchmarks/gpu_validate.py``); the last lines are
``FIGURE name = value unit``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from synthetic_bragg import synthetic_frames

from analysis.bragg.engine import EpieOptions, MLOptions, Recipe, Reconstruction, SupportSchedule
from analysis.geometry import BraggGeometry, seed_geometry
from testing import gpu_traffic
from testing.gpu_traffic import H100_BANDWIDTH_B_PER_S, LAUNCH_OVERHEAD_S, Counts

SEED_POSITIONS = 400
SEED_EPIE_SWEEPS = 1000
SEED_ML_ITERATIONS = 500
NA_RAD = (6e-4, 6e-4)
"""NA of the probe mask (the engine's ``probe_na_rad``), so that the mask's per-sweep cost is counted."""


def corner_positions(n: int, side: int = 20, step_m: float = 0.1e-6) -> np.ndarray:
    """``n`` ≤ 4 corners of the seed's ``side`` × ``side`` raster (stage x, y, z in m): the seed's object extent."""
    lo, hi = -(side - 1) / 2 * step_m, (side - 1) / 2 * step_m
    corners = [(lo, lo), (hi, hi), (lo, hi), (hi, lo)]
    if not 2 <= n <= 4:
        raise ValueError(f"corner_positions: 2 to 4 positions, got {n}")
    return np.array([(x, y, 0.0) for x, y in corners[:n]])


def engine(g: BraggGeometry, frames: np.ndarray, stage: np.ndarray, probe: np.ndarray, xp: Any, *,
           n_epie: int = 3, n_ml: int = 3) -> Reconstruction:
    """The counted reconstruction: sequential ePIE with probe + background + NA mask, then amplitude ML."""
    recipe = Recipe(n_epie_iterations=n_epie, n_ml_iterations=n_ml, background_init=0.1,
                    epie=EpieOptions(probe_update_start_iter=0, gamma=0.1), ml=MLOptions(),
                    support=SupportSchedule(thickness_schedule_m=((0, 0.5e-6),), shrinkwrap_start_iter=None))
    return Reconstruction(g, frames, np.ones((g.n_rows_px, g.n_cols_px), bool), stage,
                          (np.arange(g.n_angles) - g.n_angles // 2) * g.rocking_step_deg, probe, recipe=recipe,
                          probe_width_m=1e-6, probe_na_rad=NA_RAD, xp=xp)


def count_phases(g: BraggGeometry, frames: np.ndarray, stage: np.ndarray, probe: np.ndarray,
                 tr: gpu_traffic.Traffic, xp: Any,
                 sites: dict[str, dict[str, list[int]]] | None = None) -> dict[str, Counts]:
    """Traffic of the engine's set-up and of each of its 3 ePIE sweeps and 3 ML iterations.

    ``epie`` and ``ml`` are the middle ones: the first ePIE sweep also computes the initial R-factors, the
    last of each phase the phase's R-factors (R-factors at the phase ends only:
    :func:`testing.gpu_traffic.r_factors_at_phase_ends`), and the first ML iteration sets up μ_j, the μ map
    and Ψ0. ``sites``, if given, receives each phase's ``call site → [launches, bytes]`` (the counter must
    record sites).
    """
    names = ("setup", "epie_first", "epie", "epie_last", "ml_first", "ml", "ml_last")
    snaps = [tr.snapshot()]
    before = {k: list(v) for k, v in tr.by_site.items()}
    rec = engine(g, frames, stage, probe, xp)
    for i in range(rec.recipe.n_iterations + 1):
        if i:
            with gpu_traffic.r_factors_at_phase_ends():
                rec.iterate(1)
        snaps.append(tr.snapshot())
        if sites is not None:
            now = {k: list(v) for k, v in tr.by_site.items()}
            sites[names[i]] = {k: [v[0] - before.get(k, [0, 0])[0], v[1] - before.get(k, [0, 0])[1]]
                               for k, v in now.items() if v != before.get(k)}
            before = now
    return {name: snaps[i + 1] - snaps[i] for i, name in enumerate(names)}


def _per_position(a: Counts, b: Counts, na: int, nb: int) -> tuple[dict[str, float], dict[str, float]]:
    """(slope per position, intercept per sweep) of each counter between runs at ``na`` and ``nb`` positions."""
    slope, fixed = {}, {}
    for k in ("launches", "bytes", "to_device", "to_host"):
        va, vb = float(getattr(a, k)), float(getattr(b, k))
        slope[k] = (vb - va) / (nb - na)
        fixed[k] = va - na * slope[k]
    return slope, fixed


def projected_s(slope: dict[str, float], fixed: dict[str, float], n_pos: int = SEED_POSITIONS) -> float:
    """Seconds for one pass over ``n_pos`` positions at 3.35 TB/s and 8 µs per launch."""
    b = slope["bytes"] * n_pos + fixed["bytes"]
    n = slope["launches"] * n_pos + fixed["launches"]
    return b / H100_BANDWIDTH_B_PER_S + n * LAUNCH_OVERHEAD_S


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Count, print the figures (last, ``FIGURE name = value unit``) and write the JSON."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--positions", default="2,4", help="two position counts (corners, 2 to 4) for slope/intercept")
    ap.add_argument("--json", type=Path, default=Path(__file__).with_name("gpu_traffic.json"),
                    help="write the counts here (default benchmarks/gpu_traffic.json)")
    ap.add_argument("--sites", type=int, default=10, help="print the N call sites moving the most bytes")
    args = ap.parse_args(argv)
    na, nb = (int(v) for v in args.positions.split(","))
    t_start = time.perf_counter()
    os.environ["PXM_CPU_KERNELS"] = "0"            # the stand-in path never takes them; keep the frames' maker plain
    g = seed_geometry()
    stage = corner_positions(max(na, nb))
    frames, probe = synthetic_frames(g, stage, (8.0, 18.0))
    mods, tr = gpu_traffic.build(record_sites=True)
    sys.modules.update(mods)
    xp = mods["cupy"]
    runs: dict[int, dict[str, Counts]] = {}
    sites: dict[str, dict[str, list[int]]] = {}
    for n in (na, nb):
        tr.reset()
        runs[n] = count_phases(g, frames[:n], stage[:n], probe, tr, xp, sites if n == nb else None)
    e_pp, e_fixed = _per_position(runs[na]["epie"], runs[nb]["epie"], na, nb)
    m_pp, m_fixed = _per_position(runs[na]["ml"], runs[nb]["ml"], na, nb)
    epie_s, ml_s = projected_s(e_pp, e_fixed), projected_s(m_pp, m_fixed)
    schedule_s = SEED_EPIE_SWEEPS * epie_s + SEED_ML_ITERATIONS * ml_s
    floor_s = (SEED_EPIE_SWEEPS * (e_pp["bytes"] * SEED_POSITIONS + e_fixed["bytes"])
               + SEED_ML_ITERATIONS * (m_pp["bytes"] * SEED_POSITIONS + m_fixed["bytes"])) / H100_BANDWIDTH_B_PER_S
    print(f"seed size: {g.n_angles} angles × {g.n_rows_px}×{g.n_cols_px}, U = {g.upsampling}, box {g.recon_shape}; "
          f"runs at {na} and {nb} corner positions (the seed's object extent)")
    for n, phases in runs.items():
        for ph, c in phases.items():
            print(f"  {n} positions, {ph}: {c.launches} launches, {c.bytes / 1e9:.3f} GB, host→device {c.to_device}, "
                  f"device→host {c.to_host}")
    for ph in ("epie", "ml"):
        kinds: dict[str, list[float]] = {}
        for site, (n_l, n_b) in sites[ph].items():
            k = kinds.setdefault(site.split(" at ")[0], [0.0, 0.0])
            k[0] += n_l / nb
            k[1] += n_b / nb / 1e9
        print(f"{ph} iteration by kind, per position: " + ", ".join(
            f"{k} {v[1]:.3f} GB / {v[0]:.1f} launches" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1][1])))
        print(f"top call sites of the {ph} iteration by bytes, per position ({nb} positions, fixed part included):")
        for site, (n_l, n_b) in sorted(sites[ph].items(), key=lambda kv: -kv[1][1])[:args.sites]:
            print(f"  {n_b / nb / 1e9:7.3f} GB {n_l / nb:6.1f} launches  {site}")
    print(f"counted in {time.perf_counter() - t_start:.0f} s")
    figures: list[tuple[str, float, str]] = [
        ("epie_bytes_per_position", e_pp["bytes"] / 1e9, "GB"),
        ("ml_bytes_per_position", m_pp["bytes"] / 1e9, "GB"),
        ("epie_launches_per_position", e_pp["launches"], ""),
        ("ml_launches_per_position", m_pp["launches"], ""),
        ("epie_bytes_per_sweep_fixed", e_fixed["bytes"] / 1e9, "GB"),
        ("ml_bytes_per_iteration_fixed", m_fixed["bytes"] / 1e9, "GB"),
        ("host_syncs_per_sweep", float(runs[nb]["epie"].to_host), ""),
        ("host_syncs_per_ml_iteration", float(runs[nb]["ml"].to_host), ""),
        ("host_to_device_copies_per_sweep", float(runs[nb]["epie"].to_device), ""),
        ("host_to_device_copies_per_ml_iteration", float(runs[nb]["ml"].to_device), ""),
        ("projected_h100_epie_sweep", epie_s, "s"),
        ("projected_h100_ml_iteration", ml_s, "s"),
        ("bandwidth_floor_schedule", floor_s, "s"),
        ("projected_h100_schedule", schedule_s, "s"),
    ]
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": {"bandwidth_b_per_s": H100_BANDWIDTH_B_PER_S, "launch_s": LAUNCH_OVERHEAD_S,
                  "positions": SEED_POSITIONS, "epie_sweeps": SEED_EPIE_SWEEPS, "ml_iterations": SEED_ML_ITERATIONS},
        "epie": {"per_position": e_pp, "per_sweep_fixed": e_fixed},
        "ml": {"per_position": m_pp, "per_iteration_fixed": m_fixed},
        "runs": {str(n): {ph: {**vars(c), "bytes": c.bytes} for ph, c in p.items()} for n, p in runs.items()},
        "figures": {name: {"value": v, "unit": u} for name, v, u in figures},
        "sites": {ph: {"positions": nb, "launches_bytes": sites[ph]} for ph in ("epie", "ml")},
    }
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
        print(f"wrote {args.json}")
    for name, v, unit in figures:
        print(f"FIGURE {name} = {v:.4g} {unit}".rstrip(), flush=True)
    return res


if __name__ == "__main__":
    main()
