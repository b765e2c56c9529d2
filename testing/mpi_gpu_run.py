"""Run under ``mpirun -n R``: the Bragg engine on the CuPy stand-in with the positions split across ranks.

The stand-in (:mod:`testing.gpu_traffic`, instrumented :mod:`testing.fake_cupy`) replaces ``cupy`` in this
process, so the engine takes its GPU path: mini-batch ePIE with all-reduced sums
(:mod:`analysis.bragg.solvers.distributed`), then ML on the fused GPU passes
(:class:`analysis.bragg.solvers.fused_gpu.FusedGpuML`) with the gradients and line-search sums all-reduced. Every
rank saves its result, the code ML ran on and its host↔device copies per iteration, to show that the reductions
copy per iteration, not per position (``tests/analysis/test_mpi_gpu.py``).

Usage: ``python -m testing.mpi_gpu_run DATASET.h5 OUT_PREFIX`` (writes ``OUT_PREFIX.rank<r>.npz``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from analysis.bragg.engine import Recipe, Reconstruction, SupportSchedule
from analysis.bragg.solvers import distributed
from analysis.bragg.solvers.options import EpieOptions, MLOptions
from analysis.xp import to_numpy
from testing import gpu_traffic
from testing.mpi_run import ENGINE_NA_RAD, engine_initial_probe

N_EPIE, N_ML = 3, 3


def recipe() -> Recipe:
    """3 mini-batch sweeps (probe from sweep 1, NA mask, background) then 3 amplitude ML iterations."""
    return Recipe(n_epie_iterations=N_EPIE, n_ml_iterations=N_ML, background_init=0.1,
                  support=SupportSchedule(thickness_schedule_m=((0, 0.5e-6),), shrinkwrap_start_iter=None),
                  epie=EpieOptions(n_batches=3, probe_update_start_iter=1, gamma=0.1), ml=MLOptions())


def run(dataset_path: str | Path, comm: distributed.Communicator) -> dict[str, Any]:
    """The recipe on the stand-in; this rank's result, ML's kernels and the host copies of every iteration."""
    os.environ["PXM_CPU_KERNELS"] = "0"
    mods, tr = gpu_traffic.build()
    sys.modules.update(mods)
    rec = Reconstruction.from_file(dataset_path, engine_initial_probe(), comm=comm, recipe=recipe(),
                                   probe_na_rad=ENGINE_NA_RAD, xp=mods["cupy"])
    to_host, to_device, kernels = [], [], []
    for _ in range(N_EPIE + N_ML):
        before = tr.snapshot()
        with gpu_traffic.r_factors_at_phase_ends():
            rec.iterate(1)
        c = tr.snapshot() - before
        to_host.append(c.to_host)
        to_device.append(c.to_device)
        mem = rec.state.ml_memory
        kernels.append(getattr(getattr(mem, "exit_waves", None), "kernels", "") or "")
    res = rec.result()
    return {"object": res.object, "probe": res.probe, "background": res.background, "costs": np.asarray(res.costs),
            "to_host": np.asarray(to_host), "to_device": np.asarray(to_device), "kernels": np.asarray(kernels),
            "n_local": rec.data.n_positions, "rank": comm.rank, "size": comm.size,
            "object_on_device": type(rec.state.object).__module__.startswith("cupy"),
            "probe_sum": complex(to_numpy(rec.state.probe).sum())}


def main(argv: list[str]) -> None:
    """Entry point: ``DATASET.h5 OUT_PREFIX``."""
    comm = distributed.mpi_communicator()
    out = run(argv[0], comm)
    np.savez(f"{argv[1]}.rank{comm.rank}.npz", **out)


if __name__ == "__main__":
    main(sys.argv[1:])
