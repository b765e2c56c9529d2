"""Test support for pxm: problem factories, truth metrics and the operator contract (like ``ophyd_async.testing``).

The tests (``tests/``) and the benchmarks (``benchmarks/``) import these modules; they are installed with
the package (``pip install -e .``), so no ``PYTHONPATH`` is needed:

* :mod:`testing.bragg_problem`: a tiny noise-free problem built with the inversion's own operators
  (solver unit tests), and its error metrics;
* :mod:`testing.bragg_sim`: small data sets from the independent simulator (:mod:`sim`) on the engine's
  grid, and the truth metrics of a reconstruction (E_ρ, strain and phase RMSE, FSC against the truth);
* :mod:`testing.operator_contract`: the adjointness contract every operator in :mod:`analysis.bragg.operators`
  satisfies;
* :mod:`testing.fake_cupy`: a NumPy-backed CuPy stand-in that enforces CuPy's host/device rules;
* :mod:`testing.gpu_traffic`: that stand-in instrumented to count kernel launches, device bytes, host↔device
  copies and host syncs (``benchmarks/gpu_traffic.py``);
* :mod:`testing.mpi_run`: distributed runs under ``mpirun`` (``python -m testing.mpi_run``);
* :mod:`testing.plan_checks`: document collection and frame/event checks for Bluesky plans;
* :mod:`testing.epics_ioc`: a caproto IOC with motor-record-like PVs and a ring current, run as a process on
  loopback (the EPICS device tests);
* :mod:`testing.concurrent_scan`: one scan process into a running Tiled server, several at once with a polling
  reader and a live consumer, and the check that a run holds each frame exactly once (the concurrency tests);
* :mod:`testing.small_bragg_scan`: the 3 × 3 × 5 Bragg scan plan of a flat slab on the simulated beamline
  (the Tiled-layout, live-preview and interrupted-scan tests);
* :mod:`testing.postgres`: a private PostgreSQL server on loopback (``initdb`` in a temporary folder) for the
  facility-deployment test;
* :mod:`testing.live_scan`: the small live-pipeline scan (geometry, simulator, plan) and the check of a run's
  final live result (the live tests over every transport);
* :mod:`testing.spiral_scan`: the demo's Siemens-star spiral on the simulated forward beamline (the probe tests);
* :mod:`testing.fp_dfxm_problem`: the small FP-DFXM geometry and angle grid of the FP-DFXM solver tests;
* :mod:`testing.recipe_quality`: the data sets and the runner of "quality by recipe" (a recipe scored against
  the truth along the run: best and last state).
* :mod:`testing.ptypy_subset`: the 3-position ptypy Bragg3dSimScan subset (``tests/data``) as a pxm problem,
  and its import with ``pxm import-ptypy-bragg``;
* :mod:`testing.process_faults`: what a JSONL copy holds so far, waiting for a process's n-th run to reach
  some frames and signalling it, and the orphaned-server check (the process-level fault tests);
* :mod:`testing.pytest_threads`: a pytest plugin giving each pytest-xdist worker its share of the cores.

Runtime code (``pxm``, ``plans``, ``devices``, ``sim``, ``analysis``) must not import this package: an
import-linter contract in ``pyproject.toml`` forbids it. Pytest fixtures stay in ``tests/conftest.py``.
"""

TEST_API_KEY = "pxmtestkey0123456789"
"""The API key of the tests' Tiled servers (>= 16 characters: pxm refuses shorter keys)."""
