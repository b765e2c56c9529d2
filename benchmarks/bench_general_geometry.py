"""Asymmetric, out-of-plane Bragg ptychography end to end (issue 19): simulate, reconstruct, strain RMSE.

Runs :func:`pxm.geometry_demo.run_general_geometry_demo` (what ``pxm demo --geometry NAME`` runs) for
one or all of the geometries of docs/geometry.md and prints one JSON line per geometry: shapes,
times, R-factors, strain and tilt RMSE against the simulator's truth, and the control without the
e2 shear. Run::

    .venv/bin/python benchmarks/bench_general_geometry.py [--geometry NAME|all] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.diffractometer import GEOMETRY_PRESETS  # noqa: E402
from pxm.geometry_demo import GeneralDemoOptions, run_general_geometry_demo  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--geometry", default="asymmetric-out-of-plane", choices=[*sorted(GEOMETRY_PRESETS), "all"])
    ap.add_argument("--out", type=Path, default=None, help="folder for dataset.h5 and summary.json (default: temp)")
    a = ap.parse_args(argv)
    names = sorted(GEOMETRY_PRESETS) if a.geometry == "all" else [a.geometry]
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            out = run_general_geometry_demo(GeneralDemoOptions(geometry=name), (a.out or Path(tmp)) / name)
        out.pop("diffractometer")
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
