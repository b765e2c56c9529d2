"""Quality by recipe: does the last state of a recipe stay as good as its best (issue 14, point 4).

    nice -n 19 .venv/bin/python benchmarks/bench_recipe_quality.py \
        [--cases demo seed-like engine-model ptypy] [--recipes seed default] [--iterations 200] [--json out.json]

The cases and the runner are :mod:`testing.recipe_quality`; this prints the table of docs/benchmarks.md ("Quality
by recipe"): best and last error against the truth, their difference, strain RMSE, R-factor and iteration time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from testing.recipe_quality import CASES, run


def table(reports: list[dict[str, Any]]) -> str:
    """Markdown: one row per (case, recipe)."""
    out = ["| data set | recipe | iterations (ePIE + ML) | best E (at) | last E | last − best | strain RMSE (last) "
           "| R-factor (last) | time |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in reports:
        out.append(f"| {r['case']} | {r['recipe']} (s = {r['ml_smoothness']:g}) | {r['n_epie']} + {r['n_ml']} | "
                   f"{r['best_error']:.3f} "
                   f"({r['best_iteration']}) | {r['last_error']:.3f} | {r['margin']:+.3f} | "
                   f"{r['last_strain_rmse']:.2e} | {r['last_r_factor']:.4f} | {r['iterate_s']:.0f} s |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run every (case, recipe) and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--recipes", nargs="+", default=["seed", "default"])
    ap.add_argument("--iterations", type=int, default=200, help="ePIE sweeps (the schedule and ML scale with it)")
    ap.add_argument("--ml-smoothness", type=float, nargs="+", default=[None],
                    help="run each recipe once per ML prior strength (default: the preset's)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    reports = []
    for name in a.cases:
        t0 = time.perf_counter()
        case = CASES[name]()
        print(f"{name}: frames {case.frames.shape}, built in {time.perf_counter() - t0:.0f} s", flush=True)
        for rn in a.recipes:
            for sm in a.ml_smoothness:
                reports.append(run(case, rn, a.iterations, ml_smoothness=sm))
            if a.json:
                a.json.write_text(json.dumps(reports, indent=1, default=float))
    print(table(reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
