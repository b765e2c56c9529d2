"""Positions split across MPI ranks (issue 5): seconds per ePIE sweep / ML iteration and memory per rank.

The synthetic problem of ``bench_engine_scaling.py`` (seed geometry, uniform slab under a Gaussian
probe), written to a dataset file; each rank reads only its positions' frames
(:meth:`analysis.bragg.engine.Reconstruction.from_file`). Run on loopback, e.g.::

    .venv/bin/python benchmarks/bench_mpi.py prepare /tmp/bench_mpi.h5
    .venv/bin/mpirun -n 1 .venv/bin/python benchmarks/bench_mpi.py run /tmp/bench_mpi.h5
    .venv/bin/mpirun -n 2 --oversubscribe .venv/bin/python benchmarks/bench_mpi.py run /tmp/bench_mpi.h5

Rank 0 prints one Markdown row: ranks, median s per sweep and per ML iteration, total s, s rank 0
spent in reductions (waiting included), frames held per rank (MiB), the largest peak RSS of the
ranks (MiB), the object size (MiB) and the last ePIE cost.
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np

from analysis.bragg.engine import EpieOptions, Recipe, Reconstruction, SupportSchedule
from analysis.bragg.operators import view_grid
from analysis.bragg.solvers import distributed
from analysis.bragg.solvers.model import BraggModel
from analysis.dataset import BraggDataset, write_dataset
from analysis.geometry import seed_geometry

N_POSITIONS = 16
N_ANGLES = 20
N_PX = 128
N_SWEEPS = 4
N_ML = 2


def _geometry():
    return seed_geometry(upsampling=1, n_angles=N_ANGLES, n_rows_px=N_PX, n_cols_px=N_PX)


def _probe(g) -> np.ndarray:
    n2, n3 = g.recon_shape[1:]
    b = (np.arange(n2) - n2 // 2)[:, None]
    c = (np.arange(n3) - n3 // 2)[None, :]
    return np.exp(-(b / (N_PX / 32)) ** 2 - (c / (n3 / 7)) ** 2).astype(np.complex64)


def prepare(path: str) -> None:
    """Write the synthetic dataset file (4 × 4 raster, 100 nm steps)."""
    g = _geometry()
    xs = (np.arange(4) - 1.5) * 0.1e-6
    sx, sy = np.meshgrid(xs, xs, indexing="ij")
    stage = np.stack([sx.ravel(), sy.ravel(), np.zeros(N_POSITIONS)], axis=1)
    vg = view_grid(g, stage, margin_vox=2)
    op = BraggModel.from_geometry(g, vg.object_shape)
    obj = np.ones(vg.object_shape, np.complex64)
    frames = np.empty((N_POSITIONS, N_ANGLES, N_PX, N_PX), np.float32)
    for j in range(N_POSITIONS):
        psi = op.fourier.forward(op.probe_at(_probe(g), vg.shifts_px[j]) * obj[op.view(vg.offsets_vox[j])])
        frames[j] = np.moveaxis(np.abs(psi) ** 2, -1, 0) * 1e4
    offs = (np.arange(N_ANGLES) - N_ANGLES // 2) * g.rocking_step_deg
    write_dataset(path, BraggDataset(
        frames=frames, rocking_angle_deg=np.broadcast_to(g.theta_bragg_deg + offs, (N_POSITIONS, N_ANGLES)).copy(),
        stage_position_m=np.broadcast_to(stage[:, None], (N_POSITIONS, N_ANGLES, 3)).copy(),
        detector_mask=np.ones((N_PX, N_PX), bool), geometry=g))


class _TimedComm:
    """A communicator that adds up the seconds spent in its reductions (waiting included)."""

    def __init__(self, comm: distributed.MPICommunicator) -> None:
        self.inner, self.rank, self.size, self.seconds = comm, comm.rank, comm.size, 0.0

    def allreduce_sum(self, a):
        t0 = time.perf_counter()
        out = self.inner.allreduce_sum(a)
        self.seconds += time.perf_counter() - t0
        return out

    def allreduce_scalar(self, x: float) -> float:
        t0 = time.perf_counter()
        out = self.inner.allreduce_scalar(x)
        self.seconds += time.perf_counter() - t0
        return out


def run(path: str) -> None:
    """Sweeps and ML iterations on every rank; rank 0 prints the row."""
    comm = _TimedComm(distributed.mpi_communicator())
    sched = SupportSchedule(thickness_schedule_m=((0, 0.5e-6),), shrinkwrap_start_iter=None)
    recipe = Recipe(n_epie_iterations=N_SWEEPS, n_ml_iterations=N_ML, support=sched,
                    epie=EpieOptions(n_batches=4, alpha=0.8, probe_update_start_iter=0))
    rec = Reconstruction.from_file(path, _probe(_geometry()), comm=comm, recipe=recipe, probe_width_m=1e-6)
    t0 = time.perf_counter()
    rec.iterate(recipe.n_iterations)
    wall_s = time.perf_counter() - t0
    res = rec.result()
    t = np.asarray(res.timings_s)
    ph = np.asarray(res.phases)
    held_mib = comm.allreduce_scalar(rec.data.intensities.nbytes / 2 ** 20) / comm.size
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_max = max(comm.inner._comm.allgather(rss)) if comm.size > 1 else rss  # noqa: SLF001
    if comm.rank == 0:
        print(f"| {comm.size} | {np.median(t[ph == 'epie']):.3f} | {np.median(t[ph == 'ml']):.3f} | {wall_s:.2f} "
              f"| {comm.seconds:.2f} | {held_mib:.1f} | {rss_max:.0f} | {res.object.nbytes / 2 ** 20:.1f} "
              f"| {res.costs[N_SWEEPS - 1]:.6g} |")


if __name__ == "__main__":
    {"prepare": prepare, "run": run}[sys.argv[1]](sys.argv[2])
