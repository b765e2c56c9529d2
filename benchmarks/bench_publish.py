"""Time to publish one Bragg result to Tiled as a self-describing dataset, and to read it back (docs/tiled-layout.md).

The result is a short reconstruction of the tests' engine-model problem (object 66 × 19 × 20); the server is a real
`tiled serve` process on loopback. Prints the median of 3 publications and of 3 reads with the plain client
(``node.read()`` → xarray.Dataset), and the number of arrays written (one HTTP request each).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from analysis.bragg import PipelineOptions, reconstruct
from analysis.bragg.recipes import quick_recipe
from analysis.bragg.solvers.options import Execution
from pxm.catalog import TiledServerConfig, TiledService, ensure_layout
from pxm.publication import outcome_dataset, publish_outcome
from testing.bragg_problem import engine_inputs, make_problem, scan_of


def main() -> None:
    """Print the publication and read-back times."""
    problem = make_problem()
    recipe = dataclasses.replace(quick_recipe(), allow_undersampled=True)
    outcome = reconstruct(scan_of(problem), recipe, engine_inputs(problem)["probe"],
                          options=PipelineOptions(execution=Execution(backend="numpy"), progress=False))
    n_arrays = len(outcome_dataset(outcome).variables)
    cfg = TiledServerConfig(data_dir=Path(tempfile.mkdtemp()), api_key="benchkey0123456789")
    with TiledService(cfg) as service:
        _, processed = ensure_layout(service.client())
        t_pub, t_read, keys = [], [], []
        for _ in range(3):
            t0 = time.perf_counter()
            keys.append(publish_outcome(processed, uuid.uuid4().hex, outcome).item["id"])
            t_pub.append(time.perf_counter() - t0)
        for key in keys:
            t0 = time.perf_counter()
            processed[key].read()
            t_read.append(time.perf_counter() - t0)
    print(f"object {outcome.object.shape}: {n_arrays} arrays + 1 container per result")
    print(f"publish_outcome: median {np.median(t_pub):.2f} s ({', '.join(f'{t:.2f}' for t in t_pub)})")
    print(f"read() -> xarray.Dataset: median {np.median(t_read):.2f} s ({', '.join(f'{t:.2f}' for t in t_read)})")


if __name__ == "__main__":
    main()
