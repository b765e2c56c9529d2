"""Run every benchmark script in this folder, one after another (``make bench``).

Results are printed; copy them into docs/benchmarks.md with the machine and date.
Pass script names (e.g. ``bench_sim_frames``) to run only those.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run the selected (default: all) ``bench_*.py`` scripts; return the number that failed."""
    here = Path(__file__).resolve().parent
    scripts = sorted(here.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if s.stem in argv]
    failed = 0
    for script in scripts:
        print(f"=== {script.name}", flush=True)
        t0 = time.perf_counter()
        pythonpath = os.pathsep.join(filter(None, [str(here.parent), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": pythonpath}
        rc = subprocess.call([sys.executable, str(script)], cwd=here.parent, env=env)   # testing/ without install
        print(f"=== {script.name}: exit {rc}, {time.perf_counter() - t0:.1f} s", flush=True)
        failed += rc != 0
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
