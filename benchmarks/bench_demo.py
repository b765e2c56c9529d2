"""Wall time of ``pxm demo`` at its default size (5×5 raster × 21 angles, 64×64 frames), end to end.

Plain script: ``.venv/bin/python benchmarks/bench_demo.py [--repeat N]``. Runs the CLI
(``pxm demo``) as a subprocess in a temporary data directory, so the time includes the
interpreter start, imports, the embedded Tiled server start and stop, the alignment
scan, the Siemens-star spiral and its probe, the Bragg-ptychography scan and the live engine's final
result (the demo's closing lines: R-factor, strain RMSE against the truth, converged). The demo's own per-stage
lines are echoed; the Bragg stage's frame rate is derived from them.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def demo_command(data_dir: Path) -> list[str]:
    """The ``pxm demo`` command line for this interpreter's environment."""
    script = Path(sys.executable).with_name("pxm")
    base = ([str(script)] if script.exists()
            else [sys.executable, "-c", "import sys; from pxm.cli import main; sys.exit(main())"])
    return [*base, "demo", "--data-dir", str(data_dir)]


def run_once() -> tuple[float, str]:
    """Run the demo once in a fresh temporary folder; return (wall seconds, its output)."""
    with tempfile.TemporaryDirectory(prefix="pxm-bench-demo-") as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run(demo_command(Path(tmp) / "data"), capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"pxm demo failed with exit code {proc.returncode}")
    return wall, proc.stdout


def main() -> None:
    """Time the demo ``--repeat`` times and print the stage lines and totals."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="number of runs (default 1)")
    args = ap.parse_args()
    for i in range(args.repeat):
        wall, out = run_once()
        for line in out.splitlines():
            if re.search(r"^\d/[34]|frames in|rocking-curve centre|beamtime done|final result|strain RMSE|"
                         r"^converged", line.strip()):
                print("   ", line.strip())
        m = re.search(r"(\d+) positions × (\d+) angles = (\d+) frames.*?\n\s*\d+ frames in ([\d.]+) s", out, re.S)
        bp = ""
        if m:
            n, s = int(m.group(3)), float(m.group(4))
            bp = f"; Bragg scan {n} frames in {s:.1f} s ({1e3 * s / n:.0f} ms/frame incl. Bluesky, HDF5, Tiled)"
        print(f"run {i + 1}: pxm demo (default size) end to end {wall:.1f} s{bp}", flush=True)


if __name__ == "__main__":
    main()
