"""A pytest plugin that shares the cores among pytest-xdist workers: each worker's thread pools get cores / workers.

Loaded with ``-p testing.pytest_threads`` (``addopts`` in ``pyproject.toml``), so it is imported before the other
plugins and conftest files, and so before NumPy's BLAS and Numba read their thread counts. In a worker
(``PYTEST_XDIST_WORKER`` set) it sets ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` and
``NUMBA_NUM_THREADS`` to ``max(1, cores // workers)`` unless already set; the processes the tests start inherit
them. Without xdist it does nothing: a serial run keeps every core.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
"""The thread-count variables of the libraries the tests load (OpenMP, OpenBLAS, MKL, Numba)."""


def threads_per_worker(n_cores: int, n_workers: int) -> int:
    """The threads each of ``n_workers`` workers may use on ``n_cores`` cores (at least 1)."""
    return max(1, n_cores // max(1, n_workers))


def limit_worker_threads(environ: MutableMapping[str, str]) -> int | None:
    """Set the thread variables in ``environ`` for an xdist worker; return the count, or None outside xdist."""
    if "PYTEST_XDIST_WORKER" not in environ:
        return None
    n = threads_per_worker(len(os.sched_getaffinity(0)), int(environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    for name in THREAD_VARIABLES:
        environ.setdefault(name, str(n))
    return n


limit_worker_threads(os.environ)
