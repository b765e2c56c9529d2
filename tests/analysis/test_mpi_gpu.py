"""The GPU path on several ranks (issue 16): ``mpirun -n 2`` runs the engine on the CuPy stand-in, positions split,
ρ/P2/b and the ML sums all-reduced, and gives the 1-rank answer; the reductions copy to the host per iteration
(per batch in ePIE), never per position. ``testing/mpi_gpu_run.py`` is what each rank runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.dataset import write_dataset
from testing.bragg_problem import dataset_of, make_problem
from testing.mpi_gpu_run import N_EPIE
from testing.mpi_run import mpi_env, mpirun

ROOT = Path(__file__).resolve().parents[2]


def _ranks(n_ranks: int, dataset: Path, prefix: Path) -> list[dict[str, np.ndarray]]:
    pytest.importorskip("mpi4py", reason="mpi4py not installed (pip install .[mpi])")
    cmd = [mpirun(), "-n", str(n_ranks), "--oversubscribe", sys.executable, "-m", "testing.mpi_gpu_run", str(dataset),
           str(prefix)]
    r = subprocess.run(cmd, cwd=ROOT, env=mpi_env(ROOT), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return [dict(np.load(f"{prefix}.rank{k}.npz")) for k in range(n_ranks)]


@pytest.mark.skipif(mpirun() is None, reason="mpirun not found (pip install .[mpi] or apt-get install openmpi-bin)")
def test_two_ranks_on_the_gpu_path_give_the_one_rank_answer_with_copies_per_iteration(tmp_path):
    dataset = tmp_path / "problem.h5"
    write_dataset(dataset, dataset_of(make_problem(upsampling=1, n_side=3, seed=4)))
    (one,) = _ranks(1, dataset, tmp_path / "one")
    two = _ranks(2, dataset, tmp_path / "two")
    assert [int(r["n_local"]) for r in two] == [5, 4] and int(one["n_local"]) == 9    # positions split
    for r in (one, *two):
        assert bool(r["object_on_device"])
        assert list(r["kernels"][N_EPIE:]) == ["fused-gpu"] * 3                      # ML on the fused GPU passes
    for r in two:
        for k in ("object", "probe", "background"):
            scale = np.abs(one[k]).max()
            np.testing.assert_allclose(r[k], one[k], rtol=0, atol=1e-5 * scale, err_msg=k)
        np.testing.assert_allclose(r["costs"], one["costs"], rtol=1e-5)
    np.testing.assert_array_equal(two[0]["object"], two[1]["object"])                # ranks stay identical
    # host copies: the same on the rank holding 5 positions as on the one holding 4 (per iteration, not per
    # position). ML: ∇ρ*, ∇P2* (one copy each way), the cost, L', L'', the Armijo cost, and the one read of the
    # iteration's scalars: 7 device→host and 2 host→device (R-factors add one at the phase's end)
    ml = slice(N_EPIE, None)
    np.testing.assert_array_equal(two[0]["to_host"][ml], two[1]["to_host"][ml])
    assert list(two[0]["to_host"][ml][:-1]) == [7, 7] and list(two[0]["to_device"][ml][1:]) == [2, 2]
    assert list(one["to_host"][ml][1:-1]) == [1] and not one["to_device"][ml][1:].any()   # 1 rank: the one read
    # ePIE: per batch ρ's numerator and denominator, the probe's, log b (3 batches), never per position
    for r in two:
        assert r["to_host"][1:N_EPIE].max() <= 7 * 3, r["to_host"]
    np.testing.assert_array_equal(two[0]["to_host"][[0, N_EPIE - 1]], two[1]["to_host"][[0, N_EPIE - 1]])
