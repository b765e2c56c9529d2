"""The engine on a GPU (issue 3, docs/benchmarks.md, The GPU path's device traffic): one prepared run for a lent
GPU machine.

1. **check** — the engine on CuPy against NumPy (array code, ``PXM_CPU_KERNELS=0``) on a small
   problem (joint probe, background, mini-batch and sequential ePIE, ML with the smoothness prior):
   costs and object must agree to float32 / cuFFT rounding; and the adjoint contract of the Fourier
   and probe operators on the device.
2. **timing** — seconds per ePIE sweep (sequential, and mini-batch rPIE), per ML iteration, and the
   GPU memory the run held, for
   ``issue5``: 11 positions × 40 angles × 256², U = 1 (the CPU benchmark's problem), and
   ``seed``: 400 positions × 42 angles × U = 3 × 200 × 160 (the seed's full size).

It needs only NumPy, SciPy, h5py and CuPy (the GPU image has them), not the pxm install:
``PYTHONPATH=. python3 benchmarks/bench_gpu.py [--sizes issue5,seed] [--sweeps 3] [--ml 3] [--json F]``
(the JSON goes to ``$OUT/bench_gpu.json`` when ``OUT`` is set). ``--stand-in`` runs the whole script
on the CPU through ``testing/fake_cupy.py`` at a small size, to check the script itself.
Frames are synthetic (a uniform object under a Gaussian probe through the engine's own operators):
timing does not depend on their content.
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
from synthetic_bragg import synthetic_frames, timing_reconstruction

from analysis.bragg.engine import EpieOptions, MLOptions
from analysis.geometry import BraggGeometry, seed_geometry
from analysis.xp import backend, device_description
from testing.bragg_sim import raster


def sizes() -> dict[str, tuple[BraggGeometry, np.ndarray, tuple[float, float], int]]:
    """The problems this script can time: name → (geometry, stage positions (POS, 3) m, probe σ (px),
    mini-batch count).
    """
    xs = (np.arange(11) - 5) * 0.1e-6
    return {
        "small": (seed_geometry(n_rows_px=48, n_cols_px=40, n_angles=12, upsampling=3),
                  raster(3, 0.1e-6, jitter=0.0), (4.0, 6.0), 3),
        "issue5": (seed_geometry(upsampling=1, n_angles=40, n_rows_px=256, n_cols_px=256),
                   np.stack([xs, 0.3 * xs, np.zeros(11)], axis=1), (8.0, 6.0), 2),
        "seed": (seed_geometry(), raster(20, 0.1e-6, jitter=0.0), (8.0, 18.0), 20),
    }


def _memory(xp: Any) -> tuple[float, float]:
    """(GB held by CuPy's memory pool, GB in use on the device) — the pool keeps what the run needed."""
    pool = xp.get_default_memory_pool()
    try:
        free_b, total_b = xp.cuda.runtime.memGetInfo()
        used = (total_b - free_b) / 1e9
    except Exception:  # noqa: BLE001 - the stand-in has no device memory
        used = float("nan")
    return pool.total_bytes() / 1e9, used


def check(xp: Any) -> dict[str, float]:
    """Engine on ``xp`` against NumPy's array code, and the operators' adjoint contract on ``xp``."""
    from analysis.bragg.operators.fourier import FoldedFourier3D
    from analysis.bragg.operators.probe import ProbeExtrusion, extrusion_slope_px
    from testing.operator_contract import check_adjoint

    g, stage, sigma, n_batches = sizes()["small"]
    frames, probe = synthetic_frames(g, stage, sigma, xp=xp)
    out: dict[str, float] = {}
    kernels = os.environ.get("PXM_CPU_KERNELS")
    os.environ["PXM_CPU_KERNELS"] = "0"                    # NumPy reference: the same array code
    try:
        for batches in (0, n_batches):
            runs = {}
            for name, mod in (("numpy", np), ("device", xp)):
                rec = timing_reconstruction(g, frames, stage, probe, n_epie=4, n_ml=3, xp=mod,
                                            epie=EpieOptions(probe_update_start_iter=1, n_batches=batches, gamma=0.1),
                                            ml=MLOptions(smoothness=0.01))
                rec.iterate(rec.recipe.n_iterations)
                runs[name] = rec.result()
            a, b = runs["device"], runs["numpy"]
            tag = "sequential" if batches == 0 else f"{batches} batches"
            out[f"cost_rel_diff ({tag})"] = float(np.max(np.abs(np.subtract(a.costs, b.costs)) / np.abs(b.costs)))
            out[f"object_rel_diff ({tag})"] = float(np.linalg.norm(a.object - b.object) / np.linalg.norm(b.object))
            out[f"probe_rel_diff ({tag})"] = float(np.linalg.norm(a.probe - b.probe) / np.linalg.norm(b.probe))
    finally:
        if kernels is None:
            os.environ.pop("PXM_CPU_KERNELS", None)
        else:
            os.environ["PXM_CPU_KERNELS"] = kernels
    fourier = FoldedFourier3D.from_geometry(g)
    out["adjoint_fourier"] = check_adjoint(fourier, fourier.box_shape, fourier.out_shape, xp=xp, rtol=1e-5)
    ext = ProbeExtrusion(g.recon_shape, extrusion_slope_px(g), (0.3, -0.2))
    out["adjoint_extrusion"] = check_adjoint(ext, ext.probe_shape, ext.box_shape, xp=xp, rtol=1e-5)
    ok = all(v <= 1e-3 for k, v in out.items() if "rel_diff" in k)
    out["passed"] = float(ok)
    print("check: " + ", ".join(f"{k} {v:.2e}" for k, v in out.items() if k != "passed")
          + f" -> {'PASSED' if ok else 'FAILED'}", flush=True)
    return out


def timing(xp: Any, name: str, n_sweeps: int, n_ml: int) -> dict[str, float]:
    """Seconds per sequential sweep, per mini-batch sweep and per ML iteration (medians after a warm-up)."""
    g, stage, sigma, n_batches = sizes()[name]
    pool = xp.get_default_memory_pool()
    pool.free_all_blocks()
    t0 = time.perf_counter()
    frames, probe = synthetic_frames(g, stage, sigma, xp=xp)
    t_frames = time.perf_counter() - t0
    out: dict[str, float] = {"positions": float(stage.shape[0]), "frames_s": t_frames}
    for tag, batches in (("sequential", 0), ("minibatch", n_batches)):
        t0 = time.perf_counter()
        rec = timing_reconstruction(g, frames, stage, probe, n_epie=n_sweeps + 1,
                                    n_ml=(n_ml + 1) if batches == 0 else 0, xp=xp,
                                    epie=EpieOptions(probe_update_start_iter=0, n_batches=batches))
        out[f"setup_s ({tag})"] = time.perf_counter() - t0
        rec.iterate(rec.recipe.n_iterations)
        t = np.asarray(rec.result().timings_s)
        out[f"s_per_sweep ({tag})"] = float(np.median(t[1:n_sweeps + 1]))
        if batches == 0 and n_ml:
            out["s_per_ml_iteration"] = float(np.median(t[n_sweeps + 2:] if n_ml > 1 else t[n_sweeps + 1:]))
        held, used = _memory(xp)
        out[f"pool_gb ({tag})"], out[f"device_used_gb ({tag})"] = held, used
        del rec
    if n_ml:
        out["seed_schedule_min"] = (1000 * out["s_per_sweep (sequential)"] + 500 * out["s_per_ml_iteration"]) / 60
    print(f"{name}: {int(out['positions'])} positions × {g.n_angles} angles × {g.n_rows_px}×{g.n_cols_px}, "
          f"U = {g.upsampling}, box {g.recon_shape}: " + ", ".join(
              f"{k} {v:.3g}" for k, v in out.items() if k != "positions"), flush=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the check and the timings; print them and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="issue5,seed", help="comma-separated: small, issue5, seed")
    ap.add_argument("--sweeps", type=int, default=3, help="timed ePIE sweeps per variant (after one warm-up)")
    ap.add_argument("--ml", type=int, default=3, help="timed ML iterations (after one warm-up)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here (default $OUT/bench_gpu.json)")
    ap.add_argument("--stand-in", action="store_true", help="CPU dry run on testing/fake_cupy.py (small size only)")
    args = ap.parse_args(argv)
    if args.stand_in:
        from testing import fake_cupy

        sys.modules.update(fake_cupy.build()[0])
    xp = backend("cupy")
    names = [s for s in args.sizes.split(",") if s]
    unknown = set(names) - set(sizes())
    if unknown:
        raise SystemExit(f"bench_gpu: unknown size(s) {sorted(unknown)}; choose from {sorted(sizes())}")
    res: dict[str, Any] = {"device": device_description(xp), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "check": check(xp)}
    print(f"device: {res['device']}", flush=True)
    for name in names:
        res[name] = timing(xp, name, args.sweeps, args.ml)
    path = args.json or (Path(os.environ["OUT"]) / "bench_gpu.json" if os.environ.get("OUT") else None)
    if path is not None:
        path.write_text(json.dumps(res, indent=1))
        print(f"wrote {path}")
    return res


if __name__ == "__main__":
    main()
