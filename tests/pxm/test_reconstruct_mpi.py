"""``pxm reconstruct DATASET.h5 --mpi`` under ``mpirun -n 2``: one results file from rank 0, equal to a 1-rank run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.dataset import read_results, write_dataset
from pxm.cli import main
from testing.bragg_problem import dataset_of, make_problem
from testing.mpi_run import mpi_env, mpirun

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("mpi-cli") / "problem.h5"
    write_dataset(path, dataset_of(make_problem(upsampling=1, n_side=3, seed=4)))
    return path


def test_mpi_needs_batches_and_a_file(dataset_file, tmp_path, capsys):
    out = tmp_path / "r.h5"
    assert main(["reconstruct", str(dataset_file), "-o", str(out), "--recipe", "quick", "--mpi", "--no-progress"]) == 1
    assert "--mpi needs --batches" in capsys.readouterr().err
    assert main(["reconstruct", str(dataset_file), "-o", str(out), "--recipe", "quick", "--mpi", "--batches", "3",
                 "--fsc", "--no-progress"]) == 1
    assert "does not take" in capsys.readouterr().err and not out.exists()


def _cli(n_ranks: int, dataset: Path, out_dir: Path) -> Path:
    out_dir.mkdir()
    res = out_dir / "results.h5"
    cmd = [mpirun(), "-n", str(n_ranks), "--oversubscribe", sys.executable, "-m", "pxm.cli", "reconstruct",
           str(dataset), "-o", str(res), "--recipe", "quick", "--iterations", "4", "--ml", "2", "--batches", "3",
           "--mpi", "--no-progress"]
    r = subprocess.run(cmd, cwd=out_dir, env=mpi_env(ROOT), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count("wrote") == 1                      # rank 0 only
    return res


@pytest.mark.skipif(mpirun() is None, reason="mpirun not found (pip install .[mpi] or apt-get install openmpi-bin)")
def test_mpirun_two_ranks_writes_the_one_rank_results(dataset_file, tmp_path):
    pytest.importorskip("mpi4py", reason="mpi4py not installed (pip install .[mpi])")
    one = read_results(_cli(1, dataset_file, tmp_path / "one"))
    two_path = _cli(2, dataset_file, tmp_path / "two")
    assert sorted(p.name for p in two_path.parent.iterdir()) == ["results.h5"]
    two = read_results(two_path)
    assert (one["provenance"]["mpi_ranks"], two["provenance"]["mpi_ranks"]) == (1, 2)
    for k in ("object", "probe", "background"):
        scale = np.abs(one[k]).max()
        np.testing.assert_allclose(two[k], one[k], rtol=0, atol=1e-5 * scale, err_msg=k)
    np.testing.assert_allclose(two["error_history"], one["error_history"], rtol=1e-5)
    for k, v in one["metrics"].items():
        if k == "convergence_reason":                       # words around numbers compared in their own keys
            continue
        if isinstance(v, str):
            assert two["metrics"][k] == v, k
        else:
            assert two["metrics"][k] == pytest.approx(v, rel=1e-5, nan_ok=True), k
    assert one["parameters"] == two["parameters"] and two["parameters"]["epie"]["n_batches"] == 3
    np.testing.assert_allclose(two["strain"]["reconstruction"].eps_zz, one["strain"]["reconstruction"].eps_zz,
                               rtol=0, atol=1e-4 * np.nanmax(np.abs(one["strain"]["reconstruction"].eps_zz)))
