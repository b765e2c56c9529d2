"""The prepared GPU check (issue 16): correctness, speed, memory and bandwidth of the CuPy path on a lent GPU.

One run, ≤ 8 min on an H100 (``PYTHONPATH=. python3 benchmarks/gpu_validate.py``):

1. **check** — the engine on CuPy (the fused ePIE sweep and ML passes of ``analysis/bragg/solvers/fused_gpu.py``)
   against NumPy's array code (``PXM_CPU_KERNELS=0``) on a small case (ePIE with probe, background and NA
   mask, then ML): costs, object and probe to float32 tolerance, and that both fused paths ran; every CUDA
   kernel of ``analysis/bragg/solvers/gpu_kernels.py`` against its NumPy reference (≤ 1e-5, two sizes); the Fourier and
   probe-extrusion operators, forward and adjoint, at the seed's box (294 × 160 × 126).
2. **timing** — seconds per ePIE sweep (fused) and per ML iteration at the seed's size (400 positions × 42
   angles, U = 3, 200 × 160 frames; the recipe ``benchmarks/gpu_traffic.py`` counts), medians after a
   warm-up, and per ePIE sweep of the CuPy array code (``PXM_GPU_KERNELS=0`` also turns off the fused ML;
   ``--no-array-baseline`` skips it); the seed schedule (1000 + 500) projected from them against the 300 s
   goal.
3. **memory** — CuPy's pool bytes at the end of each phase, the pool's free blocks released at its start
   (the pool keeps the blocks a phase needed: its size is the phase's peak).
4. **device** — a streaming-bandwidth probe (a large device copy) and the launch overhead (a tiny kernel).
5. **achieved bandwidth** — the counted bytes per sweep (``benchmarks/gpu_traffic.json``, written by
   ``benchmarks/gpu_traffic.py``; recomputed in a subprocess when absent) over the measured seconds.

Prints one ``FIGURE name = value unit`` line per figure, last, and writes ``$OUT/gpu_validate.json``
(``OUT`` defaults to ``./gpu_validate_out``). Without CuPy and a CUDA device it refuses in one line with
exit status 2. ``--stand-in`` runs the whole script on CPU through the instrumented stand-in
(``testing/gpu_traffic.py``) at a tiny size, to check the script itself; its figures are not GPU figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from gpu_traffic import SEED_EPIE_SWEEPS, SEED_ML_ITERATIONS, engine
from synthetic_bragg import synthetic_frames

from analysis.geometry import BraggGeometry, seed_geometry
from analysis.xp import backend, cupy_available, device_description, to_numpy
from testing.bragg_sim import raster

GOAL_S = 300.0
"""The seed schedule's goal on one GPU (issue 16): 5 minutes."""
HERE = Path(__file__).resolve().parent


def problem(size: str) -> tuple[BraggGeometry, np.ndarray]:
    """(geometry, stage positions (POS, 3) m) of ``size``: ``tiny`` (stand-in), ``small`` (check) or ``seed``."""
    if size == "tiny":
        return seed_geometry(n_rows_px=24, n_cols_px=20, n_angles=6, upsampling=2), raster(2, 0.1e-6, jitter=0.0)
    if size == "small":
        return seed_geometry(n_rows_px=48, n_cols_px=40, n_angles=12, upsampling=3), raster(3, 0.1e-6, jitter=0.0)
    if size == "seed":
        return seed_geometry(), raster(20, 0.1e-6, jitter=0.0)
    raise ValueError(f"problem: unknown size {size!r}")


def sync(xp: Any) -> None:
    """Wait for the device queue."""
    xp.cuda.Device().synchronize()


def _rel(a: Any, b: Any) -> float:
    a, b = to_numpy(a), to_numpy(b)
    return float(np.linalg.norm(a - b) / max(float(np.linalg.norm(b)), 1e-30))


def check_engine(xp: Any, size: str) -> tuple[dict[str, float], bool]:
    """Engine on ``xp`` (the fused GPU ePIE sweep and ML passes) against NumPy's array code: 3 ePIE sweeps + 2 ML
    iterations, the same inputs. Returns the differences and whether both fused GPU paths ran.
    """
    g, stage = problem(size)
    frames, probe = synthetic_frames(g, stage, (4.0, 6.0))
    res = {}
    fused = False
    for name, mod in (("numpy", np), ("device", xp)):
        rec = engine(g, frames, stage, probe, mod, n_epie=3, n_ml=2)      # Recipe.rng_seed: the same sweep order
        rec.iterate(rec.recipe.n_iterations)
        res[name] = rec.result()
        fused = fused or {"gpu-epie", "gpu-ml"} <= set(rec.op.fused_cpu)
    a, b = res["device"], res["numpy"]
    return {"engine_cost_rel_diff": float(np.max(np.abs(np.subtract(a.costs, b.costs)) / np.abs(b.costs))),
            "engine_object_rel_diff": _rel(a.object, b.object),
            "engine_probe_rel_diff": _rel(a.probe, b.probe)}, fused


def check_kernels(xp: Any) -> dict[str, float]:
    """Every fused kernel (analysis/bragg/solvers/gpu_kernels.py) on the device against its NumPy reference, on the
    inputs of
    ``testing.gpu_kernel_cases`` at a small size and at one that spans many blocks (atomics, warp reductions).
    """
    from analysis.bragg.solvers.gpu_kernels import CUDA_SOURCE, launch_grid
    from analysis.bragg.solvers.gpu_kernels import KERNELS as SPECS
    from testing.gpu_kernel_cases import CaseSizes, kernel_cases, max_rel_diff

    module = xp.RawModule(code=CUDA_SOURCE)
    worst: dict[str, float] = {}
    big = CaseSizes(n1p=96, n2=40, n3=63, nm=21, n1=61, obj=(110, 50, 70), offset=(7, 3, 5))
    for sizes in (CaseSizes(), big):
        for name, args in kernel_cases(np.random.default_rng(11), sizes):
            ref = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
            SPECS[name].reference(*ref)
            dev = tuple(xp.asarray(a) if isinstance(a, np.ndarray) else a for a in args)
            n = max(int(a.size) for a in args if isinstance(a, np.ndarray))
            module.get_function(name)(*launch_grid(n), dev)
            got = tuple(to_numpy(d) if isinstance(a, np.ndarray) else d for a, d in zip(args, dev, strict=True))
            worst[name] = max(worst.get(name, 0.0), max_rel_diff(name, ref, got))
    print("kernels: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()), flush=True)
    return {"kernels_max_rel_diff": max(worst.values())}


def check_operators(xp: Any, g: BraggGeometry) -> dict[str, float]:
    """Fourier and extrusion operators at ``g``'s box: device against NumPy, forward and adjoint (complex64)."""
    from analysis.bragg.operators.fourier import FoldedFourier3D
    from analysis.bragg.operators.probe import ProbeExtrusion, extrusion_slope_px

    rng = np.random.default_rng(1)

    def rand(shape: tuple[int, ...]) -> np.ndarray:
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)

    out: dict[str, float] = {}
    fourier = FoldedFourier3D.from_geometry(g)
    ext = ProbeExtrusion(g.recon_shape, extrusion_slope_px(g), (0.3, -0.2))
    for tag, op, shape_in, shape_out in (("fourier", fourier, fourier.box_shape, fourier.out_shape),
                                         ("extrusion", ext, ext.probe_shape, ext.box_shape)):
        x, y = rand(shape_in), rand(shape_out)
        out[f"{tag}_forward_rel_diff"] = _rel(op.forward(xp.asarray(x)), op.forward(x))
        out[f"{tag}_adjoint_rel_diff"] = _rel(op.adjoint(xp.asarray(y)), op.adjoint(y))
    return out


def time_seed(xp: Any, size: str, n_sweeps: int, n_ml: int, phase: Callable[[str], None],
              counter: Any = None, array_baseline: bool = False) -> dict[str, float]:
    """Seconds per ePIE sweep (the fused GPU sweep) and per ML iteration (medians after one warm-up each) at
    ``size``; with ``array_baseline`` also per ePIE sweep of the CuPy array code (``PXM_GPU_KERNELS=0``).

    With ``counter`` (the stand-in's :class:`testing.gpu_traffic.Traffic`), also the bytes it counted per
    timed ePIE sweep and ML iteration (``epie_bytes``, ``ml_bytes``).
    """
    g, stage = problem(size)
    phase("frames")
    frames, probe = synthetic_frames(g, stage, (8.0, 18.0), xp=xp)
    phase("setup")
    t0 = time.perf_counter()
    rec = engine(g, frames, stage, probe, xp, n_epie=n_sweeps + 1, n_ml=n_ml + 1)
    sync(xp)
    out = {"positions": float(stage.shape[0]), "setup_s": time.perf_counter() - t0}
    times: dict[str, list[float]] = {"epie": [], "ml": []}
    for ph, n in (("epie", n_sweeps + 1), ("ml", n_ml + 1)):
        phase(ph)
        for i in range(n):
            if i == 1 and counter is not None:
                before = counter.snapshot()
            t0 = time.perf_counter()
            rec.iterate(1)
            sync(xp)
            times[ph].append(time.perf_counter() - t0)
        if counter is not None and n > 1:
            out[f"{ph}_bytes"] = (counter.snapshot() - before).bytes / (n - 1)
    if array_baseline:                          # the same sweeps through the CuPy array code (no fused kernels)
        phase("epie_array")
        os.environ["PXM_GPU_KERNELS"] = "0"
        try:
            rec = engine(g, frames, stage, probe, xp, n_epie=3, n_ml=1)
            for _ in range(3):
                t0 = time.perf_counter()
                rec.iterate(1)
                sync(xp)
                times.setdefault("epie_array", []).append(time.perf_counter() - t0)
        finally:
            os.environ.pop("PXM_GPU_KERNELS")
        out["s_per_epie_sweep_array"] = float(np.median(times["epie_array"][1:]))
    out["s_per_epie_sweep"] = float(np.median(times["epie"][1:]))
    out["s_per_ml_iteration"] = float(np.median(times["ml"][1:]))
    out["first_epie_sweep_s"], out["first_ml_iteration_s"] = times["epie"][0], times["ml"][0]
    return out


def bandwidth_probe(xp: Any, nbytes: int, repeats: int = 10) -> float:
    """Bytes per second of a device-to-device copy of ``nbytes`` (read + write counted)."""
    a = xp.ones(nbytes // 4, dtype=np.float32)
    b = xp.empty_like(a)
    b[...] = a
    sync(xp)
    t0 = time.perf_counter()
    for _ in range(repeats):
        b[...] = a
    sync(xp)
    return 2 * a.nbytes * repeats / (time.perf_counter() - t0)


def launch_overhead(xp: Any, n: int = 2000) -> float:
    """Seconds per launch of a one-element in-place kernel (CuPy dispatch + CUDA launch), queue kept full."""
    a = xp.zeros(1, dtype=np.float32)
    a += 1
    sync(xp)
    t0 = time.perf_counter()
    for _ in range(n):
        a += 1
    sync(xp)
    return (time.perf_counter() - t0) / n


def counted_bytes(path: Path | None, out_dir: Path) -> dict[str, Any]:
    """The counter's seed-size figures: ``path``, else ``benchmarks/gpu_traffic.json``, else recomputed."""
    for p in (path, HERE / "gpu_traffic.json"):
        if p is not None and p.exists():
            return dict(json.loads(p.read_text()))
    target = out_dir / "gpu_traffic.json"
    pythonpath = os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, str(HERE / "gpu_traffic.py"), "--json", str(target)], check=True,
                   env={**os.environ, "PYTHONPATH": pythonpath})
    return dict(json.loads(target.read_text()))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every part; print the figures (last) and write the JSON."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--stand-in", action="store_true", help="CPU dry run on the instrumented stand-in, tiny size")
    ap.add_argument("--sweeps", type=int, default=3, help="timed ePIE sweeps (after one warm-up)")
    ap.add_argument("--ml", type=int, default=3, help="timed ML iterations (after one warm-up)")
    ap.add_argument("--traffic-json", type=Path, default=None, help="the counter's JSON (benchmarks/gpu_traffic.py)")
    ap.add_argument("--no-array-baseline", action="store_true",
                    help="skip timing the ePIE sweep through the CuPy array code (PXM_GPU_KERNELS=0)")
    args = ap.parse_args(argv)
    out_dir = Path(os.environ.get("OUT") or "gpu_validate_out")
    os.environ["PXM_CPU_KERNELS"] = "0"                     # NumPy reference = the same array code
    tr = None
    if args.stand_in:
        from testing import gpu_traffic as counter

        mods, tr = counter.build()
        sys.modules.update(mods)
    elif not cupy_available():
        print("gpu_validate: refused: no GPU (CuPy is not installed or sees no CUDA device); run it on a lent GPU, "
              "or --stand-in for a CPU dry run", file=sys.stderr)
        raise SystemExit(2)
    xp = backend("cupy")
    pool = xp.get_default_memory_pool()
    check_size, time_size, box_g = ("tiny", "tiny", problem("tiny")[0]) if args.stand_in else (
        "small", "seed", seed_geometry())
    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"device": device_description(xp), "stand_in": args.stand_in,
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "pool_gb": {}}
    print(f"device: {res['device']}", flush=True)
    current: list[str] = []

    def phase(name: str) -> None:
        """End the running phase (record the pool), free the pool's free blocks, start ``name``."""
        if current:
            res["pool_gb"][current[0]] = pool.total_bytes() / 1e9
            current.clear()
        pool.free_all_blocks()
        if name:
            current.append(name)

    t_all = time.perf_counter()
    phase("check")
    res["check"], res["engine_fused_gpu"] = check_engine(xp, check_size)
    phase("operators")
    res["check"].update(check_operators(xp, box_g))
    res["check"].update(check_kernels(xp))
    tol = {"engine": 1e-3, "fourier": 1e-4, "extrusion": 1e-4, "kernels": 1e-5}
    res["check_passed"] = res["engine_fused_gpu"] and all(v <= tol[k.split("_")[0]] for k, v in res["check"].items())
    print("check: " + ", ".join(f"{k} {v:.2e}" for k, v in res["check"].items())
          + f" -> {'PASSED' if res['check_passed'] else 'FAILED'}", flush=True)
    timing = time_seed(xp, time_size, args.sweeps, args.ml, phase, tr, array_baseline=not args.no_array_baseline)
    res["timing"] = timing
    phase("bandwidth")
    res["stream_bytes_per_s"] = bandwidth_probe(xp, 64 << 20 if args.stand_in else 4 << 30)
    res["launch_s"] = launch_overhead(xp, 200 if args.stand_in else 2000)
    phase("")
    n_pos = timing["positions"]
    if tr is not None:                                      # the stand-in counts its own timed run
        epie_b, ml_b = timing.get("epie_bytes", float("nan")), timing.get("ml_bytes", float("nan"))
    else:
        t = counted_bytes(args.traffic_json, out_dir)
        res["traffic"] = t["figures"]
        epie_b = t["epie"]["per_position"]["bytes"] * n_pos + t["epie"]["per_sweep_fixed"]["bytes"]
        ml_b = t["ml"]["per_position"]["bytes"] * n_pos + t["ml"]["per_iteration_fixed"]["bytes"]
    schedule = SEED_EPIE_SWEEPS * timing["s_per_epie_sweep"] + SEED_ML_ITERATIONS * timing["s_per_ml_iteration"]
    figures: list[tuple[str, float, str]] = [
        ("check_passed", float(res["check_passed"]), ""),
        *((k, v, "") for k, v in res["check"].items()),
        ("engine_fused_gpu", float(res["engine_fused_gpu"]), ""),
        ("s_per_epie_sweep", timing["s_per_epie_sweep"], "s"),
        *((("s_per_epie_sweep_array", timing["s_per_epie_sweep_array"], "s"),
           ("epie_speedup_vs_array", timing["s_per_epie_sweep_array"] / timing["s_per_epie_sweep"], ""))
          if "s_per_epie_sweep_array" in timing else ()),
        ("s_per_ml_iteration", timing["s_per_ml_iteration"], "s"),
        ("setup", timing["setup_s"], "s"),
        *((f"pool_peak_{k}", v, "GB") for k, v in res["pool_gb"].items()),
        ("stream_bandwidth", res["stream_bytes_per_s"] / 1e12, "TB/s"),
        ("launch_overhead", res["launch_s"] * 1e6, "us"),
        ("achieved_epie_bandwidth", epie_b / timing["s_per_epie_sweep"] / 1e12, "TB/s"),
        ("achieved_ml_bandwidth", ml_b / timing["s_per_ml_iteration"] / 1e12, "TB/s"),
        ("schedule", schedule, "s"),
        ("schedule_over_goal", schedule / GOAL_S, ""),
        ("wall", time.perf_counter() - t_all, "s"),
    ]
    res["figures"] = {name: {"value": v, "unit": u} for name, v, u in figures}
    path = out_dir / "gpu_validate.json"
    path.write_text(json.dumps(res, indent=1))
    print(f"{time_size}: {int(n_pos)} positions; wrote {path}")
    for name, v, unit in figures:
        print(f"FIGURE {name} = {v:.4g} {unit}".rstrip(), flush=True)
    return res


if __name__ == "__main__":
    main()
