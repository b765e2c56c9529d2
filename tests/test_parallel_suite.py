"""The suite under pytest-xdist (`make test` runs `-n 2`): each worker's thread pools get its share of the cores."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from testing.pytest_threads import THREAD_VARIABLES, limit_worker_threads, threads_per_worker


def test_threads_per_worker_is_the_cores_share_and_at_least_one():
    assert threads_per_worker(2, 2) == 1
    assert threads_per_worker(16, 2) == 8
    assert threads_per_worker(2, 3) == 1
    assert threads_per_worker(4, 0) == 4


def test_outside_xdist_the_environment_is_left_alone():
    env = {"OMP_NUM_THREADS": "7"}
    assert limit_worker_threads(env) is None
    assert env == {"OMP_NUM_THREADS": "7"}


def test_in_a_worker_unset_variables_get_the_share_and_set_ones_are_kept():
    env = {"PYTEST_XDIST_WORKER": "gw1", "PYTEST_XDIST_WORKER_COUNT": "2", "OMP_NUM_THREADS": "3"}
    n = limit_worker_threads(env)
    assert n == max(1, len(os.sched_getaffinity(0)) // 2)
    assert env["OMP_NUM_THREADS"] == "3"
    assert all(env[v] == str(n) for v in THREAD_VARIABLES if v != "OMP_NUM_THREADS")


def test_numba_in_a_worker_of_a_real_xdist_run_uses_the_share(tmp_path):
    """A real `pytest -n 2` run with the plugin loaded as pyproject.toml loads it: Numba, imported by the test,
    has cores // 2 threads in both workers."""
    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(f"""
        import os
        import pytest

        @pytest.mark.parametrize("i", range(4))
        def test_share(i):
            import numba
            assert os.environ["PYTEST_XDIST_WORKER"].startswith("gw")
            assert numba.config.NUMBA_NUM_THREADS == {expected}
        """))
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES and not k.startswith("PYTEST_XDIST")}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "testing.pytest_threads", "-p",
                        "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "4 passed" in r.stdout, r.stdout + r.stderr
