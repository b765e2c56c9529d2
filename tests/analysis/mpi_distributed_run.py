"""Run under ``mpirun -n R``: distributed mini-batch sweeps on the test problem; rank 0 saves the result.

Usage: ``python -m tests.analysis.mpi_distributed_run OUT.npz [serial]``.
"""

from __future__ import annotations

import sys

import numpy as np

from analysis.solvers import distributed
from analysis.solvers.options import EpieOptions
from tests.analysis.bragg_problem import gaussian_probe, initial_state, make_problem

N_SWEEPS = 4


def run(comm: distributed.Communicator) -> dict[str, np.ndarray]:
    """Four sweeps, 3 batches, probe from sweep 1, γ = 0.1; identical seeds on every rank."""
    p = make_problem(upsampling=1, n_side=3, seed=4)
    st = initial_state(p, gaussian_probe(p.geometry, (1.6, 2.4)) * 30.0, background=0.1)
    opts = EpieOptions(n_batches=3, probe_update_start_iter=1)
    rng = np.random.default_rng(7)
    costs = []
    for _ in range(N_SWEEPS):
        st, stats = distributed.step(st, p.data, op=p.op, options=opts, comm=comm, rng=rng)
        costs.append(stats.cost)
    return {"object": st.object, "probe": st.probe, "background": st.background, "costs": np.asarray(costs)}


def main(argv: list[str]) -> None:
    """Entry point: MPI ranks unless ``serial`` is given."""
    comm = distributed.SerialCommunicator() if "serial" in argv[1:] else distributed.mpi_communicator()
    out = run(comm)
    if comm.rank == 0:
        np.savez(argv[0], size=comm.size, **out)


if __name__ == "__main__":
    main(sys.argv[1:])
