"""Data made by another code: reconstruct ptypy's Bragg3dSimScan case with `pxm reconstruct`, error vs its truth.

    python benchmarks/bench_ptypy_case.py [--case ../shared/data/ptypy_bragg_case_dev.h5] \
        [--run "default100=--iterations 100" --run "fixed=--iterations 100 --fixed-probe" ...]

Difference-map sweeps first (docs/recipes.md; a recipe file with ``[epie] dm_iterations = 120`` and
``[support] shrinkwrap_start_iter = "never"``)::

    --run "dm=--iterations 100 --ml 0 --fixed-probe --thickness-m 0.3e-6 --recipe-file dm.toml"

The thin-layer route (`pxm reconstruct-thin-layer`: the difference map on the detector lattice, slab picked by the
data; analysis.bragg.solvers.lattice)::

    --thin-layer "layer=" [--thin-layer "layer-fast=--offsets 8 --search-iterations 15"]

Each run is the command a user types: `pxm import-ptypy-bragg` once, then `pxm reconstruct DATASET --probe-file
PROBE ARGS`. The error is measured on the truth's own lattice (analysis.bragg.ptypy_bragg.compare_with_truth: the
band-consistent transfer of the object, one global complex factor and the shift along k_i removed, over the
voxels the scan lit). Results go to docs/benchmarks.md by hand, with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_CASE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptypy_bragg_case_dev.h5"


def error_of_results(case_path: Path, dataset_path: Path, results_path: Path) -> dict[str, float]:
    """E, |ρ| correlation and beam shift of a results file's object against the case's truth."""
    import h5py

    from analysis.bragg.operators.scan import view_grid
    from analysis.bragg.ptypy_bragg import compare_with_truth, lattice_transfer, read_ptypy_bragg
    from analysis.dataset import read_dataset, scan_axes
    from analysis.geometry import BraggGeometry

    case = read_ptypy_bragg(case_path)
    ds = read_dataset(dataset_path)
    with h5py.File(results_path, "r") as f:
        obj = f["object"][()]
        gmd = {k: (v[()].tolist() if hasattr(v[()], "tolist") else v[()]) for k, v in f["geometry"].items()
               if not isinstance(v, h5py.Group)}
        metrics = json.loads(f["metrics"].attrs.get("json", "{}"))
    g = BraggGeometry.from_metadata(gmd)
    stage, _ = scan_axes(ds.rocking_angle_deg, ds.stage_position_m, g)
    grid = view_grid(g, stage, margin_vox=2)
    if tuple(grid.object_shape) != tuple(obj.shape):
        raise ValueError(f"object {obj.shape} is not on the grid {grid.object_shape} this benchmark rebuilds")
    tr = lattice_transfer(g, case.theta_bragg_deg, grid.object_shape, grid.origin_vox, grid.offsets_vox)
    c = compare_with_truth(obj, tr, case)
    return {"error": c.error, "amplitude_correlation": c.amplitude_correlation, "beam_shift_nm": c.beam_shift_m * 1e9,
            "r_factor": float(metrics.get("r_factor", np.nan)), "n_voxels": c.n_voxels}


def error_of_thin_layer_result(case_path: Path, results_path: Path) -> dict[str, float]:
    """E and |ρ| correlation of a `pxm reconstruct-thin-layer` result against the case's truth (re-indexed, exact)."""
    import types

    import h5py

    from analysis.bragg.ptypy_bragg import compare_lattice_with_truth, read_ptypy_bragg

    case = read_ptypy_bragg(case_path)
    with h5py.File(results_path, "r") as f:
        obj = f["object"][()]
        lattice = types.SimpleNamespace(vectors_lab_m=f["lattice_vectors_lab_m"][()])
        scan = types.SimpleNamespace(origin_lab_m=f["origin_lab_m"][()])
        chosen = json.loads(f.attrs["chosen_json"])
    c = compare_lattice_with_truth(obj, lattice, scan, case)
    return {"error": c.error, "amplitude_correlation": c.amplitude_correlation, "r_factor": chosen["r_factor"],
            "thickness_um": chosen["thickness_m"] * 1e6, "offset_nm": chosen["offset_m"] * 1e9,
            "n_voxels": c.n_voxels}


def main(argv: list[str] | None = None) -> int:
    """Import the case once, run each `pxm reconstruct` variant, print one JSON line per run."""
    from pxm.cli import main as pxm_main

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", type=Path, default=DEFAULT_CASE)
    p.add_argument("--run", action="append", default=None, metavar="NAME=ARGS",
                   help="a named set of `pxm reconstruct` arguments (repeatable)")
    p.add_argument("--thin-layer", action="append", default=None, metavar="NAME=ARGS",
                   help="a named set of `pxm reconstruct-thin-layer` arguments (repeatable; '' for the defaults)")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)
    runs = args.run if args.run is not None else ([] if args.thin_layer else ["default100=--iterations 100"])
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pxm-ptypy-"))
    work.mkdir(parents=True, exist_ok=True)
    ds_path, probe_path = work / "case.h5", work / "case_probe.h5"
    if pxm_main(["import-ptypy-bragg", str(args.case), "-o", str(ds_path), "--probe-out", str(probe_path)]):
        return 1
    for spec in runs:
        name, _, extra = spec.partition("=")
        out = work / f"{name}.h5"
        t0 = time.perf_counter()
        rc = pxm_main(["reconstruct", str(ds_path), "--probe-file", str(probe_path), "-o", str(out),
                       "--no-progress", *extra.split()])
        wall = time.perf_counter() - t0
        row = {"run": name, "args": extra, "rc": rc, "wall_s": round(wall, 1)}
        if out.is_file():
            row.update(error_of_results(args.case, ds_path, out))
        print(json.dumps(row), flush=True)
    for spec in args.thin_layer or []:
        name, _, extra = spec.partition("=")
        out = work / f"{name}.h5"
        t0 = time.perf_counter()
        rc = pxm_main(["reconstruct-thin-layer", str(ds_path), "--probe-file", str(probe_path), "-o", str(out),
                       *extra.split()])
        row = {"run": name, "command": "reconstruct-thin-layer", "args": extra, "rc": rc,
               "wall_s": round(time.perf_counter() - t0, 1)}
        if out.is_file():
            row.update(error_of_thin_layer_result(args.case, out))
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
